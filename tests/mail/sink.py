"""An SMTP server for the tests: accepts every mail on 127.0.0.1 and writes
each one, as received, to a file of its own in the directory given.

Usage: sink.py DIR [PORT]. Prints the port it listens on (any free one
unless PORT is given) on one line once it accepts connections, then serves
until killed.
"""

import asyncio
import os
import sys
import time
import uuid

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        partial = os.path.join(self.directory, f".{name}.part")
        with open(partial, "wb") as out:
            out.write(envelope.original_content)
        # Renamed once whole, so a reader never sees half a mail.
        os.rename(partial, os.path.join(self.directory, f"{name}.eml"))
        return "250 OK"


async def main():
    directory = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    handler = Sink(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", port
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
