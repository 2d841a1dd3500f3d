"""A local stand-in for Google's OAuth, Gmail API, Pub/Sub push and an SMTP relay."""
