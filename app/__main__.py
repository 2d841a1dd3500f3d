"""Operator commands: `python -m app <command>`.

rotate-keys   re-encrypt every stored refresh token with the first TOKEN_ENCRYPTION_KEYS key
generate-key  print a new Fernet key
pubsub setup  provision the Pub/Sub topic, Gmail's publish grant and the subscription
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy import select

from app.crypto import TokenCipher, generate_key
from app.db import create_engine, create_sessionmaker, session_scope
from app.mailboxes.models import Mailbox
from app.main import load_settings_or_exit
from app.pubsub.cli import add_pubsub_command, run_pubsub_command


async def rotate_keys() -> int:
    settings = load_settings_or_exit()
    cipher = TokenCipher(settings.token_encryption_keys)
    engine = create_engine(settings.database_url)
    rotated = 0
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            mailboxes = await session.scalars(
                select(Mailbox).where(Mailbox.refresh_token_encrypted.is_not(None))
            )
            for mailbox in mailboxes:
                assert mailbox.refresh_token_encrypted is not None
                mailbox.refresh_token_encrypted = cipher.rotate(mailbox.refresh_token_encrypted)
                rotated += 1
    finally:
        await engine.dispose()
    print(f"re-encrypted {rotated} refresh token(s) with the first key")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rotate-keys", help="re-encrypt stored tokens with the first key")
    commands.add_parser("generate-key", help="print a new Fernet key")
    add_pubsub_command(commands)
    args = parser.parse_args(argv)
    if args.command == "pubsub":
        return run_pubsub_command(args)
    if args.command == "generate-key":
        print(generate_key())
        return 0
    return asyncio.run(rotate_keys())


if __name__ == "__main__":
    sys.exit(main())
