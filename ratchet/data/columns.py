"""Canonical column names, used everywhere: contracts, service, logs."""

from __future__ import annotations

TRANSACTION_ID = "transaction_id"
TS = "ts"
CARD_ID = "card_id"
MERCHANT_ID = "merchant_id"
MERCHANT_CATEGORY = "merchant_category"
COUNTRY = "country"
CARD_COUNTRY = "card_country"
CHANNEL = "channel"
AMOUNT = "amount"
IS_FRAUD = "is_fraud"
LABEL_AVAILABLE_AT = "label_available_at"
#: What the production policy of the time logged: "allow" or "block" (a blocked payment never
#: gets a label: its row is censored), and the probability of that decision given the score
#: (1.0 unless the payment was explored; see ratchet.exploration).
DECISION = "decision"
PROPENSITY = "propensity"
BLOCK = "block"
#: In a training set built from such data: 1 for a blocked row trained on as genuine
#: (censoring.censored: genuine); labelled rows keep their `propensity`.
CENSORED = "censored"

#: Columns every dataset must provide (after the spec's column mapping).
REQUIRED: tuple[str, ...] = (TRANSACTION_ID, TS, CARD_ID, MERCHANT_ID, AMOUNT, IS_FRAUD)
#: Columns a dataset may lack; whatever needs one says so.
OPTIONAL: tuple[str, ...] = (MERCHANT_CATEGORY, COUNTRY, CARD_COUNTRY, CHANNEL, LABEL_AVAILABLE_AT, DECISION, PROPENSITY)
CANONICAL: tuple[str, ...] = (
    TRANSACTION_ID, TS, CARD_ID, MERCHANT_ID, MERCHANT_CATEGORY, COUNTRY,
    CARD_COUNTRY, CHANNEL, AMOUNT, IS_FRAUD, LABEL_AVAILABLE_AT, DECISION, PROPENSITY,
)
