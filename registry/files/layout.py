"""Where things live in a registry's work tree: the file and folder names the spec fixes.

Kept apart from the modules that parse these files so that finding them costs no imports.
"""

CONFIG_FILE = "registry.yaml"
MODELS_DIR = "models"
MODEL_FILE = "model.yaml"
STAGES_FILE = "stages.yaml"
CARD_FILE = "card.yaml"
