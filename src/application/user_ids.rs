//! Turning user keys back into the ids producers sent: integers are their
//! own keys; names (string ids) are looked up in the store, which keeps each
//! beside its key (see [`crate::domain::user`]).

use crate::application::ports::{EventStore, StoreError};
use crate::domain::user::{UserId, is_name_key};

/// The id of each key, in order. A name key the store does not know (its
/// name row lost, or a snapshot older than the names table) is answered as
/// `#<key>` rather than failing a whole list.
///
/// # Errors
/// [`StoreError`] when the lookup fails.
pub async fn user_ids(store: &dyn EventStore, keys: &[u64]) -> Result<Vec<UserId>, StoreError> {
    let named: Vec<u64> = keys.iter().copied().filter(|k| is_name_key(*k)).collect();
    let names = if named.is_empty() {
        Default::default()
    } else {
        store.user_names(&named).await?
    };
    Ok(keys
        .iter()
        .map(|k| match UserId::from_int_key(*k) {
            Some(id) => id,
            None => UserId::Name(
                names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("#{k}"))
                    .into(),
            ),
        })
        .collect())
}
