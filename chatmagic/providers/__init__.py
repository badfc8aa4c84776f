"""Wire dialects: what a provider's answers, errors and limit headers mean (OpenAI chat completions today)."""
