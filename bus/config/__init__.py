"""The declared world: the model, YAML loading, rule validation and the live rule set."""
