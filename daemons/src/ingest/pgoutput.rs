//! Reading the messages of PostgreSQL's `pgoutput` logical decoding plugin (protocol
//! version 1), as the replication stream carries them: one message per change.
//!
//! Only what the ingest role needs is decoded: transaction boundaries (with the commit's end
//! position, the one place a slot may be confirmed to), relations (column names) and rows
//! inserted, updated or deleted (their values as text, with the old row an update or delete
//! carries). Every other message is recognised and skipped.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// PostgreSQL's own spelling, `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        xid: u32,
    },
    Commit {
        /// The end of the commit record: once the transaction's rows are published, the
        /// slot may be confirmed up to here.
        end_lsn: Lsn,
    },
    Relation(Relation),
    /// A row inserted, updated or deleted.
    Row {
        kind: RowKind,
        relation_id: u32,
        /// The row before the change, when the stream carries it: a delete's always, an
        /// update's when the table's replica identity is FULL or the key changed.
        old: Option<Tuple>,
        /// The row after the change (inserts and updates).
        new: Option<Tuple>,
    },
    /// Anything else (truncates, origins, types, logical messages).
    Other(u8),
}

/// One row's values in the relation's column order, as the stream carries them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tuple {
    /// As text; `None` for NULL, for a value the stream left out (below), and for the
    /// columns outside the key of a key-only old row.
    pub values: Vec<Option<String>>,
    /// The positions of large values an update left unchanged (pgoutput does not send them).
    pub unchanged: Vec<usize>,
    /// An old row of the key's columns only (the default replica identity), not the whole
    /// row (`REPLICA IDENTITY FULL`).
    pub key_only: bool,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Insert,
    /// The new row (pgoutput sends the new version whole but for unchanged large values).
    Update,
    /// The deleted row's key (its replica identity: the primary key by default).
    Delete,
}

/// A table as pgoutput describes it before its first row in a decoding session.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(String);

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!(
                "needed {n} more bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }
    /// A TupleData: each column's value as text, `None` for NULL or unchanged TOAST.
    fn tuple(&mut self, key_only: bool) -> Result<Tuple, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(usize::from(count));
        let mut unchanged = Vec::new();
        for i in 0..usize::from(count) {
            values.push(match self.u8()? {
                b'n' => None,
                b'u' => {
                    unchanged.push(i);
                    None
                }
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    Some(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                other => {
                    return Err(DecodeError(format!(
                        "unknown column kind {:?}",
                        char::from(other)
                    )))
                }
            });
        }
        Ok(Tuple {
            values,
            unchanged,
            key_only,
        })
    }
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes };
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => {
            let _final_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Message::Begin { xid: r.u32()? }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            Message::Commit {
                end_lsn: Lsn(r.u64()?),
            }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let _flags = r.u8()?;
                columns.push(r.string()?);
                let _type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' | b'U' | b'D' => {
            let relation_id = r.u32()?;
            let kind = match tag {
                b'I' => RowKind::Insert,
                b'U' => RowKind::Update,
                _ => RowKind::Delete,
            };
            let mut part = r.u8()?;
            let mut old = None;
            if kind != RowKind::Insert && (part == b'K' || part == b'O') {
                // The old key ('K') or whole old row ('O'); an update's new row follows.
                old = Some(r.tuple(part == b'K')?);
                if kind == RowKind::Update {
                    part = r.u8()?;
                }
            }
            let new = match kind {
                RowKind::Delete if old.is_some() => None,
                RowKind::Insert | RowKind::Update if part == b'N' => Some(r.tuple(false)?),
                _ => {
                    return Err(DecodeError(format!(
                        "{kind:?} message carries tuple kind {:?}",
                        char::from(part)
                    )))
                }
            };
            Message::Row {
                kind,
                relation_id,
                old,
                new,
            }
        }
        b'T' | b'O' | b'Y' | b'M' => Message::Other(tag),
        other => {
            return Err(DecodeError(format!(
                "unknown message type {:?}",
                char::from(other)
            )))
        }
    })
}

/// A row of a published table, by column name.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertedRow {
    /// `schema.table`.
    pub table: String,
    /// The position of the row's change in the log, for the operator (dead letters).
    pub lsn: Lsn,
    pub columns: Vec<(String, Option<String>)>,
}

/// One change of the stream, decoded once, as the ingest acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Begin,
    /// The transaction's end: the slot may be confirmed up to `end_lsn` once its rows are
    /// published.
    Commit {
        end_lsn: Lsn,
    },
    /// A table's description; `changed` when it differs from the one this session had
    /// (an ALTER TABLE, or a table dropped and created again under the same name).
    Relation {
        table: String,
        changed: bool,
    },
    /// A row inserted.
    Insert(InsertedRow),
    /// A row updated or deleted.
    Changed(ChangedRow),
    Other,
}

/// A row updated or deleted, with what the stream says of it before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRow {
    /// [`RowKind::Update`] or [`RowKind::Delete`].
    pub kind: RowKind,
    /// `schema.table`.
    pub table: String,
    pub lsn: Lsn,
    /// The row before the change, by column name, when the stream carries it.
    pub old: Option<OldRow>,
    /// An update's new row by column name (a large value it left unchanged is taken from
    /// a whole old row, else `None` and named in `unchanged`); empty for a delete.
    pub new: Vec<(String, Option<String>)>,
    pub unchanged: Vec<String>,
}

/// The row before an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct OldRow {
    /// Its key's columns only (the table's default replica identity: the other columns
    /// are `None`), or the whole row (`REPLICA IDENTITY FULL`).
    pub key_only: bool,
    pub columns: Vec<(String, Option<String>)>,
}

/// Reads a stream of pgoutput messages, keeping the relations it described. A session
/// starts with none known: pgoutput sends each relation before its first row.
#[derive(Debug, Default)]
pub struct ChangeReader {
    relations: HashMap<u32, Relation>,
    in_transaction: bool,
}

impl ChangeReader {
    /// Whether a transaction has begun and not yet committed.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Takes the next message (at `lsn`).
    pub fn read(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<Change, DecodeError> {
        Ok(match decode(bytes)? {
            Message::Begin { xid } => {
                if self.in_transaction {
                    return Err(DecodeError(format!(
                        "transaction {xid} begins inside another"
                    )));
                }
                self.in_transaction = true;
                Change::Begin
            }
            Message::Commit { end_lsn } => {
                if !self.in_transaction {
                    return Err(DecodeError("commit outside a transaction".into()));
                }
                self.in_transaction = false;
                Change::Commit { end_lsn }
            }
            Message::Relation(relation) => {
                let table = format!("{}.{}", relation.namespace, relation.name);
                let known = self
                    .relations
                    .values()
                    .any(|r| r.namespace == relation.namespace && r.name == relation.name);
                let same = self.relations.get(&relation.id) == Some(&relation);
                self.relations.insert(relation.id, relation);
                Change::Relation {
                    table,
                    changed: known && !same,
                }
            }
            Message::Row {
                kind,
                relation_id,
                old,
                new,
            } => {
                if !self.in_transaction {
                    return Err(DecodeError("row outside a transaction".into()));
                }
                let relation = self.relations.get(&relation_id).ok_or_else(|| {
                    DecodeError(format!(
                        "row of relation {relation_id} before its description"
                    ))
                })?;
                row_change(relation, lsn, kind, old, new)?
            }
            Message::Other(_) => Change::Other,
        })
    }
}

/// A row message as a change, its values by the relation's column names.
fn row_change(
    relation: &Relation,
    lsn: Lsn,
    kind: RowKind,
    old: Option<Tuple>,
    new: Option<Tuple>,
) -> Result<Change, DecodeError> {
    let table = format!("{}.{}", relation.namespace, relation.name);
    let named = |values: Vec<Option<String>>| -> Vec<(String, Option<String>)> {
        relation.columns.iter().cloned().zip(values).collect()
    };
    if kind == RowKind::Insert {
        let new = new.ok_or_else(|| DecodeError("an insert without its row".into()))?;
        return Ok(Change::Insert(InsertedRow {
            table,
            lsn,
            columns: named(new.values),
        }));
    }
    let mut unchanged = Vec::new();
    let new = match new {
        Some(mut new) => {
            for i in new.unchanged {
                match old.as_ref().filter(|o| !o.key_only) {
                    Some(whole) => {
                        if let Some(value) = new.values.get_mut(i) {
                            *value = whole.values.get(i).cloned().flatten();
                        }
                    }
                    None => unchanged.extend(relation.columns.get(i).cloned()),
                }
            }
            named(new.values)
        }
        None => Vec::new(),
    };
    Ok(Change::Changed(ChangedRow {
        kind,
        table,
        lsn,
        old: old.map(|o| OldRow {
            key_only: o.key_only,
            columns: named(o.values),
        }),
        new,
        unchanged,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn begin(xid: u32) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend(0x152B748u64.to_be_bytes());
        b.extend(0u64.to_be_bytes());
        b.extend(xid.to_be_bytes());
        b
    }

    fn relation() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend(16_384u32.to_be_bytes());
        b.extend(b"public\0orders\0d");
        b.extend(2u16.to_be_bytes());
        for name in ["order_id", "country"] {
            b.push(0);
            b.extend(name.as_bytes());
            b.push(0);
            b.extend(20u32.to_be_bytes());
            b.extend(u32::MAX.to_be_bytes());
        }
        b
    }

    fn insert(id: &str, country: Option<&str>) -> Vec<u8> {
        let mut b = vec![b'I'];
        b.extend(16_384u32.to_be_bytes());
        b.push(b'N');
        b.extend(2u16.to_be_bytes());
        for v in [Some(id), country] {
            match v {
                Some(v) => {
                    b.push(b't');
                    b.extend((v.len() as u32).to_be_bytes());
                    b.extend(v.as_bytes());
                }
                None => b.push(b'n'),
            }
        }
        b
    }

    fn commit(end: u64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend((end - 0x30).to_be_bytes());
        b.extend(end.to_be_bytes());
        b.extend(0u64.to_be_bytes());
        b
    }

    #[test]
    fn lsns_read_and_print_as_postgres_spells_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    fn row(change: Change) -> InsertedRow {
        match change {
            Change::Insert(row) => row,
            other => panic!("not a row: {other:?}"),
        }
    }

    #[test]
    fn changes_are_read_one_by_one_with_rows_by_column_name() {
        let mut a = ChangeReader::default();
        let at = Lsn(0x100);
        assert_eq!(a.read(at, &begin(731)).unwrap(), Change::Begin);
        assert!(a.in_transaction());
        assert_eq!(
            a.read(at, &relation()).unwrap(),
            Change::Relation {
                table: "public.orders".into(),
                changed: false
            }
        );
        let first = row(a.read(at, &insert("4503599627370496", Some("DE"))).unwrap());
        assert_eq!(first.table, "public.orders");
        let second = row(a
            .read(Lsn(0x180), &insert("4503599627370497", None))
            .unwrap());
        assert_eq!(
            second.columns,
            vec![
                ("order_id".to_owned(), Some("4503599627370497".to_owned())),
                ("country".to_owned(), None)
            ]
        );
        assert_eq!(second.lsn, Lsn(0x180));
        assert_eq!(
            a.read(Lsn(0x200), &commit(0x1_0000_0200)).unwrap(),
            Change::Commit {
                end_lsn: Lsn(0x1_0000_0200)
            }
        );
        assert!(!a.in_transaction());
        // The same description again is no change; another one is.
        assert_eq!(
            a.read(at, &relation()).unwrap(),
            Change::Relation {
                table: "public.orders".into(),
                changed: false
            }
        );
        let mut altered = relation();
        altered[4] = 1; // another relation id: the table was created again
        assert_eq!(
            a.read(at, &altered).unwrap(),
            Change::Relation {
                table: "public.orders".into(),
                changed: true
            }
        );
        a.read(at, &begin(732)).unwrap();
        assert_eq!(a.read(at, b"Mx").unwrap(), Change::Other);
    }

    fn changed(change: Change) -> ChangedRow {
        match change {
            Change::Changed(row) => row,
            other => panic!("not an update or delete: {other:?}"),
        }
    }

    /// A tuple of the test relation's two columns, as pgoutput writes it (`u`: unchanged).
    fn tuple(id: Option<&str>, country: Option<&str>) -> Vec<u8> {
        let mut b = 2u16.to_be_bytes().to_vec();
        for v in [id, country] {
            match v {
                Some("u") => b.push(b'u'),
                Some(v) => {
                    b.push(b't');
                    b.extend((v.len() as u32).to_be_bytes());
                    b.extend(v.as_bytes());
                }
                None => b.push(b'n'),
            }
        }
        b
    }

    fn message(tag: u8, parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![tag];
        b.extend(16_384u32.to_be_bytes());
        for (kind, tuple) in parts {
            b.push(*kind);
            b.extend(tuple);
        }
        b
    }

    #[test]
    fn updates_and_deletes_are_read_with_the_old_row_the_stream_carries() {
        let mut a = ChangeReader::default();
        a.read(Lsn(1), &begin(1)).unwrap();
        a.read(Lsn(1), &relation()).unwrap();
        let id = "4503599627370496";
        // The default replica identity, key kept: the new row only.
        let update = message(b'U', &[(b'N', tuple(Some(id), Some("FR")))]);
        let u = changed(a.read(Lsn(2), &update).unwrap());
        assert_eq!(
            (u.kind, u.lsn, u.old.as_ref()),
            (RowKind::Update, Lsn(2), None)
        );
        assert_eq!(u.new[1], ("country".to_owned(), Some("FR".to_owned())));
        // An update that changed the key sends the old key first.
        let rekeyed = message(
            b'U',
            &[
                (b'K', tuple(Some("1"), None)),
                (b'N', tuple(Some(id), Some("FR"))),
            ],
        );
        let u = changed(a.read(Lsn(3), &rekeyed).unwrap());
        let old = u.old.unwrap();
        assert!(old.key_only);
        assert_eq!(old.columns[0].1.as_deref(), Some("1"));
        assert_eq!(u.new[1].1.as_deref(), Some("FR"));
        // REPLICA IDENTITY FULL: the whole old row; a large value left unchanged is taken
        // from it.
        let full = message(
            b'U',
            &[
                (b'O', tuple(Some(id), Some("DE"))),
                (b'N', tuple(Some(id), Some("u"))),
            ],
        );
        let u = changed(a.read(Lsn(4), &full).unwrap());
        assert!(!u.old.as_ref().unwrap().key_only);
        assert_eq!(u.new[1].1.as_deref(), Some("DE"));
        assert!(u.unchanged.is_empty());
        // Without a whole old row, an unchanged value is named as such.
        let partial = message(b'U', &[(b'N', tuple(Some(id), Some("u")))]);
        let u = changed(a.read(Lsn(5), &partial).unwrap());
        assert_eq!(
            (u.new[1].1.as_deref(), &u.unchanged[..]),
            (None, &["country".to_owned()][..])
        );
        // Deletes: the key, or the whole row.
        let delete = message(b'D', &[(b'K', tuple(Some(id), None))]);
        let d = changed(a.read(Lsn(6), &delete).unwrap());
        assert_eq!(d.kind, RowKind::Delete);
        assert!(d.new.is_empty());
        assert!(d.old.as_ref().unwrap().key_only);
        let delete = message(b'D', &[(b'O', tuple(Some(id), Some("DE")))]);
        let d = changed(a.read(Lsn(7), &delete).unwrap());
        assert_eq!(d.old.unwrap().columns[1].1.as_deref(), Some("DE"));
        // A delete without its old row, an insert with one: malformed.
        assert!(a
            .read(Lsn(8), &message(b'D', &[(b'N', tuple(Some(id), None))]))
            .is_err());
        assert!(a
            .read(Lsn(8), &message(b'I', &[(b'K', tuple(Some(id), None))]))
            .is_err());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut a = ChangeReader::default();
        assert!(
            a.read(Lsn(1), &insert("1", None)).is_err(),
            "row before begin"
        );
        a.read(Lsn(1), &begin(1)).unwrap();
        assert!(
            a.read(Lsn(1), &insert("1", None)).is_err(),
            "unknown relation"
        );
        let rel = relation();
        for cut in 0..rel.len() {
            let _ = decode(&rel[..cut]);
        }
        assert!(decode(&rel[..rel.len() - 3]).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"Z").is_err());
        assert!(a.read(Lsn(1), &begin(2)).is_err(), "nested begin");
    }
}
