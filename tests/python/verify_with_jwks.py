"""Verify authd access tokens the way a Python service would: PyJWT against
authd's JWKS URL. Prints each token's subject; exits non-zero on any failure.

usage: verify_with_jwks.py JWKS_URL ISSUER AUDIENCE TOKEN...
"""

import sys

import jwt


def main() -> int:
    jwks_url, issuer, audience, *tokens = sys.argv[1:]
    keys = jwt.PyJWKClient(jwks_url, cache_keys=False)
    for token in tokens:
        key = keys.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer=issuer,
            audience=audience,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        print(claims["sub"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
