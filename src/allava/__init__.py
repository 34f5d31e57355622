"""allava: lite vision-language assistants from synthesized data."""

__version__ = "0.1.0"
