"""VidXAI sessions package."""
