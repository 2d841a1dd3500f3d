"""Message templates: organization-scoped CRUD and sandboxed rendering (app.mail.render)."""
