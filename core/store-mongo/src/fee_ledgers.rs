//! Refunded payments' fee ledgers in MongoDB: one document per payment, replaced by compare-and-set
//! on its version (insert for a first ledger: the unique key refuses a second), never in a transaction.

use mongodb::bson::{doc, Document};

use settle_core::compute::PaymentKey;
use settle_core::model::{FeeLedgerWrite, PaymentFeeLedger};
use settle_core::store::StoreError;

use super::collections::FEE_LEDGERS;
use super::documents as d;
use super::{backend, is_duplicate_key, MongoStore};

/// Keys looked up per query.
const LOOKUP_BATCH: usize = 500;

fn moved(ledger: &PaymentFeeLedger) -> StoreError {
    StoreError::FeeLedgerMoved {
        merchant_id: ledger.merchant_id.clone(),
        external_ref: ledger.external_ref.clone(),
    }
}

fn version(ledger: &PaymentFeeLedger) -> Result<i64, StoreError> {
    i64::try_from(ledger.version)
        .map_err(|_| StoreError::Backend("a fee ledger version overflowed".into()))
}

impl MongoStore {
    /// The stored ledgers of these payments; keys without one are left out.
    pub(super) async fn read_fee_ledgers(
        &self,
        keys: &[PaymentKey],
    ) -> Result<Vec<PaymentFeeLedger>, StoreError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(LOOKUP_BATCH) {
            let any_of: Vec<Document> = chunk
                .iter()
                .map(|(merchant_id, external_ref)| {
                    doc! { "merchant_id": merchant_id, "external_ref": external_ref }
                })
                .collect();
            let documents = self
                .find_all(FEE_LEDGERS, doc! { "$or": any_of }, doc! {}, None, None)
                .await?;
            for document in documents {
                found.push(d::nested::<PaymentFeeLedger>(&document, "ledger")?);
            }
        }
        Ok(found)
    }

    /// Writes each ledger by compare-and-set on the version it was read at.
    pub(super) async fn write_fee_ledgers(
        &self,
        writes: &[FeeLedgerWrite],
    ) -> Result<(), StoreError> {
        let collection = self.collection(FEE_LEDGERS);
        for write in writes {
            let ledger = &write.ledger;
            let document = doc! {
                "merchant_id": &ledger.merchant_id,
                "external_ref": &ledger.external_ref,
                "version": version(ledger)?,
                "ledger": d::to_nested(ledger)?,
            };
            match write.expected_version {
                None => match collection.insert_one(document).await {
                    Ok(_) => {}
                    Err(error) if is_duplicate_key(&error) => return Err(moved(ledger)),
                    Err(error) => return Err(backend(error)),
                },
                Some(expected) => {
                    let expected = i64::try_from(expected).map_err(|_| moved(ledger))?;
                    let filter = doc! {
                        "merchant_id": &ledger.merchant_id,
                        "external_ref": &ledger.external_ref,
                        "version": expected,
                    };
                    let replaced = collection
                        .replace_one(filter, document)
                        .await
                        .map_err(backend)?;
                    if replaced.matched_count == 0 {
                        return Err(moved(ledger));
                    }
                }
            }
        }
        Ok(())
    }
}
