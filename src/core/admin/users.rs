//! Managing users as an operator.
