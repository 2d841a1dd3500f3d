"""Every capability's ORM models, imported so that `Base.metadata` is complete."""

from app.db import Base
from app.leases import Lease
from app.mailboxes.models import Mailbox, OAuthState
from app.templates.models import Template
from app.threads.models import Message, Thread

__all__ = ["Base", "Lease", "Mailbox", "Message", "OAuthState", "Template", "Thread"]
