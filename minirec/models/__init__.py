"""Models built from the recurrent stack: a language model (PTB), a sentence classifier (SST)
and a small hierarchical classifier ("the lower the simpler")."""

from minirec.models.classifier import SentenceClassifier
from minirec.models.hierarchical import HierarchicalClassifier
from minirec.models.language_model import LanguageModel, detach_state

__all__ = ["LanguageModel", "SentenceClassifier", "HierarchicalClassifier", "detach_state"]
