"""Authentication shared by every service: signing keys, access tokens verified locally, the caller's identity."""
