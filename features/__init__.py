"""Order-history intake, point-in-time behavioural features, labels and RFM segments."""
from features.behaviour import build, feature_columns, feature_docs, registered
from features.intake import IntakeError, IntakeReport, read_customers, read_orders
from features.labels import labels

__all__ = [
    "IntakeError", "IntakeReport", "build", "feature_columns", "feature_docs", "labels", "read_customers",
    "read_orders", "registered",
]
