//! Managing service accounts and their API keys as an operator.
