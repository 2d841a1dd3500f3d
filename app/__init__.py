"""leadmail: send to leads from the rep's Gmail and sync their replies back."""
