"""Test tools, not part of the product: local emulators of the Bedrock batch and OpenAI batch APIs that
tests and dry runs talk to over loopback HTTP."""
