//! Reading the audit trail: listing, watching, and keeping it within its
//! retention.

use crate::store::Database;

#[derive(Clone)]
pub(crate) struct Audit {
    db: Database,
}

impl Audit {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }
}
