"""The HTTP wing: the contract's routes, their request and response models, parsing and authentication."""
