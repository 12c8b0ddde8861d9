"""VidXAI vidxai_gui package."""
