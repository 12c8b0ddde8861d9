"""VidXAI engine package."""
