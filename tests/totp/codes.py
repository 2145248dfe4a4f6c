"""Prints, one a line, the TOTP codes of the otpauth:// URI in argv[1] that
an authenticator app shows a number of 30-second steps from now (argv[2:]),
after checking the URI names issuer and account as argv says."""

import sys
import time

import pyotp

uri, issuer, account, *steps = sys.argv[1:]
totp = pyotp.parse_uri(uri)
assert totp.issuer == issuer, totp.issuer
assert totp.name == account, totp.name
assert totp.digits == 6 and totp.interval == 30, (totp.digits, totp.interval)
now = time.time()
for step in steps:
    print(totp.at(now + 30 * int(step)))
