//! The embedded persistent store (redb): profiles, the decision ledger
//! (idempotency on `trigger_id`), per-user history, the deferred queue and
//! the send outbox. Every batch is one durable transaction.

use crate::model::Profile;
use crate::policy::History;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const PROFILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("profiles");
/// Key: (hour of the trigger's `ts`, trigger_id). The hour prefix keeps a
/// batch's inserts on few pages (triggers arrive roughly in time order) and
/// makes pruning a range delete. Redeliveries carry the same `ts`.
const LEDGER: TableDefinition<(u32, &[u8]), &[u8]> = TableDefinition::new("ledger");
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
const DEFERRED: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("deferred");
/// Key: (decision time, trigger_id): appends, not random inserts.
const OUTBOX: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

const PROFILE_OFFSETS: &str = "profiles_offsets";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(String),
    #[error("store: corrupt value: {0}")]
    Corrupt(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The state of a decided trigger in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LedgerStatus {
    Deferred = 1,
    /// Decided to send; in the outbox.
    Sending = 2,
    Sent = 3,
    Suppressed = 4,
    HeldOut = 5,
    Failed = 6,
}

impl LedgerStatus {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Deferred,
            2 => Self::Sending,
            3 => Self::Sent,
            4 => Self::Suppressed,
            5 => Self::HeldOut,
            6 => Self::Failed,
            _ => return None,
        })
    }
}

/// All writes of one batch, applied in one transaction.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// (trigger_id, trigger ts, status, decision time)
    pub ledger: Vec<(String, i64, LedgerStatus, i64)>,
    pub history: HashMap<String, History>,
    pub deferred_put: Vec<(i64, String, Vec<u8>)>,
    pub deferred_del: Vec<(i64, String)>,
    /// (decision time, trigger_id, entry)
    pub outbox_put: Vec<(i64, String, Vec<u8>)>,
    /// (decision time, trigger_id)
    pub outbox_del: Vec<(i64, String)>,
    /// Sends that failed for good: (user, decision time, campaign). Their
    /// history entries are removed (applied after `history`), so that a
    /// message that never left counts toward no cap or gap.
    pub history_drop: Vec<(String, i64, String)>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
            && self.history.is_empty()
            && self.deferred_put.is_empty()
            && self.deferred_del.is_empty()
            && self.outbox_put.is_empty()
            && self.outbox_del.is_empty()
            && self.history_drop.is_empty()
    }
}

/// The store.
pub struct Store {
    db: Database,
}

/// A consistent read view.
pub struct Reader {
    ledger: redb::ReadOnlyTable<(u32, &'static [u8]), &'static [u8]>,
    history: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    profiles: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Reader {
    /// The ledger state of a trigger (identified by id and `ts`).
    pub fn ledger(&self, trigger_id: &str, ts: i64) -> Result<Option<LedgerStatus>, StoreError> {
        Ok(self
            .ledger
            .get((hour(ts), trigger_id.as_bytes()))?
            .and_then(|v| v.value().first().copied().and_then(LedgerStatus::from_u8)))
    }
    pub fn history(&self, user: &str) -> Result<History, StoreError> {
        match self.history.get(user.as_bytes())? {
            Some(v) => Ok(serde_json::from_slice(v.value())?),
            None => Ok(History::default()),
        }
    }
    pub fn profile(&self, user: &str) -> Result<Option<Profile>, StoreError> {
        match self.profiles.get(user.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }
}

fn hour(ts: i64) -> u32 {
    (ts.max(0) / 3_600_000).min(u32::MAX as i64) as u32
}

fn ledger_value(status: LedgerStatus, at: i64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = status as u8;
    v[1..].copy_from_slice(&at.to_be_bytes());
    v
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Db(e.to_string()))?;
            }
        }
        // A bounded page cache keeps memory flat however large the file.
        let db = redb::Builder::new().set_cache_size(64 << 20).create(path)?;
        let w = db.begin_write()?;
        {
            w.open_table(PROFILES)?;
            w.open_table(LEDGER)?;
            w.open_table(HISTORY)?;
            w.open_table(DEFERRED)?;
            w.open_table(OUTBOX)?;
            w.open_table(META)?;
        }
        w.commit()?;
        Ok(Store { db })
    }

    pub fn reader(&self) -> Result<Reader, StoreError> {
        let r = self.db.begin_read()?;
        Ok(Reader {
            ledger: r.open_table(LEDGER)?,
            history: r.open_table(HISTORY)?,
            profiles: r.open_table(PROFILES)?,
        })
    }

    /// Applies one batch durably.
    pub fn commit(&self, ws: &WriteSet) -> Result<(), StoreError> {
        if ws.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut ledger = w.open_table(LEDGER)?;
            for (id, ts, st, at) in &ws.ledger {
                ledger.insert(
                    (hour(*ts), id.as_bytes()),
                    ledger_value(*st, *at).as_slice(),
                )?;
            }
            let mut hist = w.open_table(HISTORY)?;
            for (user, h) in &ws.history {
                if h.0.is_empty() {
                    hist.remove(user.as_bytes())?;
                } else {
                    hist.insert(user.as_bytes(), serde_json::to_vec(h)?.as_slice())?;
                }
            }
            for (user, at, campaign) in &ws.history_drop {
                let Some(v) = hist.get(user.as_bytes())? else {
                    continue;
                };
                let mut h: History = serde_json::from_slice(v.value())?;
                drop(v);
                let Some(i) =
                    h.0.iter()
                        .position(|e| e.ts == *at && !e.held_out && &e.campaign == campaign)
                else {
                    continue;
                };
                h.0.remove(i);
                if h.0.is_empty() {
                    hist.remove(user.as_bytes())?;
                } else {
                    hist.insert(user.as_bytes(), serde_json::to_vec(&h)?.as_slice())?;
                }
            }
            let mut def = w.open_table(DEFERRED)?;
            for (until, id) in &ws.deferred_del {
                def.remove((*until as u64, id.as_bytes()))?;
            }
            for (until, id, v) in &ws.deferred_put {
                def.insert((*until as u64, id.as_bytes()), v.as_slice())?;
            }
            let mut out = w.open_table(OUTBOX)?;
            for (at, id) in &ws.outbox_del {
                out.remove((*at as u64, id.as_bytes()))?;
            }
            for (at, id, v) in &ws.outbox_put {
                out.insert((*at as u64, id.as_bytes()), v.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// [`Store::commit`] on the blocking pool, so that an fsync does not
    /// hold up the async workers (sends, metrics).
    pub async fn commit_async(
        self: &std::sync::Arc<Self>,
        ws: std::sync::Arc<WriteSet>,
    ) -> Result<(), StoreError> {
        if ws.is_empty() {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.commit(&ws))
            .await
            .map_err(|e| StoreError::Db(format!("commit task: {e}")))?
    }

    /// Deferred entries due at or before `now`, oldest first.
    pub fn due_deferred<T: DeserializeOwned>(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, T)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(DEFERRED)?;
        let mut out = Vec::new();
        for row in t.range::<(u64, &[u8])>(..(now.max(0) as u64 + 1, &b""[..]))? {
            let (k, v) = row?;
            let (until, id) = k.value();
            out.push((
                until as i64,
                String::from_utf8_lossy(id).into_owned(),
                serde_json::from_slice(v.value())?,
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn deferred_len(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(DEFERRED)?.len()?)
    }

    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(OUTBOX)?.len()?)
    }

    /// Every outbox entry (sends decided but not known to be done).
    pub fn outbox<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Applies profile upserts (Some) and erasures (None) together with the
    /// consumed offsets of the `profiles` topic.
    pub fn apply_profiles(
        &self,
        updates: &[(String, Option<Vec<u8>>)],
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut p = w.open_table(PROFILES)?;
            for (user, v) in updates {
                match v {
                    Some(v) => {
                        p.insert(user.as_bytes(), v.as_slice())?;
                    }
                    None => {
                        p.remove(user.as_bytes())?;
                    }
                }
            }
            let mut m = w.open_table(META)?;
            m.insert(
                PROFILE_OFFSETS.as_bytes(),
                serde_json::to_vec(offsets)?.as_slice(),
            )?;
        }
        w.commit()?;
        Ok(())
    }

    /// Next offsets to read per partition of `profiles`; None when the
    /// profile store was never built.
    pub fn profile_offsets(&self) -> Result<Option<BTreeMap<i32, i64>>, StoreError> {
        let r = self.db.begin_read()?;
        let m = r.open_table(META)?;
        match m.get(PROFILE_OFFSETS.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn profile(&self, user: &str) -> Result<Option<Profile>, StoreError> {
        self.reader()?.profile(user)
    }

    /// Writes a profile directly (benchmark and tests).
    pub fn put_profiles(&self, profiles: &[Profile]) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut p = w.open_table(PROFILES)?;
            for pr in profiles {
                p.insert(pr.user_id.as_bytes(), serialize(pr)?.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Forgets ledger entries of triggers whose `ts` is before `cutoff`
    /// (bounded work per call). Returns how many were removed.
    pub fn prune_ledger(&self, cutoff: i64, max: usize) -> Result<usize, StoreError> {
        let w = self.db.begin_write()?;
        let mut keys = Vec::new();
        {
            let mut ledger = w.open_table(LEDGER)?;
            for row in ledger.range::<(u32, &[u8])>(..(hour(cutoff), &b""[..]))? {
                let (k, _) = row?;
                let (h, id) = k.value();
                keys.push((h, id.to_vec()));
                if keys.len() >= max {
                    break;
                }
            }
            for (h, id) in &keys {
                ledger.remove((*h, id.as_slice()))?;
            }
        }
        w.commit()?;
        Ok(keys.len())
    }
}

pub fn serialize<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HistoryEntry;

    #[test]
    fn a_failed_send_leaves_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let entry = |ts, campaign: &str, held_out| HistoryEntry {
            ts,
            campaign: campaign.into(),
            held_out,
        };
        let mut ws = WriteSet::default();
        ws.history.insert(
            "u1".into(),
            History(vec![
                entry(10, "cart", false),
                entry(20, "cart", true),
                entry(20, "cart", false),
            ]),
        );
        store.commit(&ws).unwrap();
        // The send decided at 20 failed for good: its entry goes, the
        // held-out decision at the same time and the other send stay.
        let ws = WriteSet {
            history_drop: vec![("u1".into(), 20, "cart".into())],
            ..Default::default()
        };
        store.commit(&ws).unwrap();
        let h = store.reader().unwrap().history("u1").unwrap();
        assert_eq!(h.0, vec![entry(10, "cart", false), entry(20, "cart", true)]);
        // Nothing to drop: no change, no error.
        let ws = WriteSet {
            history_drop: vec![("u2".into(), 5, "cart".into())],
            ..Default::default()
        };
        store.commit(&ws).unwrap();
    }
}
