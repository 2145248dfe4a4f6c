"""Calls authd from Python: Signup, Login and GetMe over gRPC, then verifies
the access token offline against authd's JWKS with PyJWT.

Settings: AUTHD_ADDR (default 127.0.0.1:50051), AUTHD_ISSUER and
AUTHD_AUDIENCE (default authd). Exits non-zero on any failure.
"""

import importlib.resources
import os
import sys
import tempfile
import uuid
from pathlib import Path

import grpc
import jwt
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def generate_stubs(out: str):
    """Compiles the contract at run time, so no generated code is committed."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "auth/v1/auth.proto"),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    from auth.v1 import auth_pb2, auth_pb2_grpc

    return auth_pb2, auth_pb2_grpc


def main():
    addr = os.environ.get("AUTHD_ADDR", "127.0.0.1:50051")
    issuer = os.environ.get("AUTHD_ISSUER", "authd")
    audience = os.environ.get("AUTHD_AUDIENCE", "authd")
    email = f"py-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"

    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = generate_stubs(out)
        with grpc.insecure_channel(addr) as channel:
            auth = pb_grpc.AuthServiceStub(channel)

            user = auth.Signup(
                pb.SignupRequest(email=email, password=password, username="Py")
            ).user
            print(f"Signup: created {user.email} with id {user.id}")

            login = auth.Login(pb.LoginRequest(email=email, password=password))
            print(f"Login: {login.token_type} token, expires in {login.expires_in} s")

            me = auth.GetMe(
                pb.GetMeRequest(),
                metadata=[("authorization", f"Bearer {login.access_token}")],
            ).user
            print(f"GetMe: {me.email} ({me.username}), id {me.id}")

    jwks_url = f"http://{addr}/.well-known/jwks.json"
    key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(login.access_token)
    claims = jwt.decode(
        login.access_token,
        key,
        algorithms=["EdDSA"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )
    sub = claims["sub"]
    print(f"JWKS: {jwks_url} verifies the token (kid {key.key_id}), sub {sub}")

    if me.email != email or sub != me.id:
        sys.exit(f"mismatch: signed up {email}, GetMe {me.email} {me.id}, sub {sub}")
    print(f"OK: the token's sub is the id GetMe returned for {email}")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as error:
        sys.exit(f"failed: {error.code().name}: {error.details()}")
    except jwt.PyJWTError as error:
        sys.exit(f"failed: {error}")
