//! Reading the messages of PostgreSQL's `pgoutput` logical decoding plugin (protocol
//! version 1), as `pg_logical_slot_peek_binary_changes` returns them: one message per row.
//!
//! Only what the ingest role needs is decoded: transaction boundaries (with the commit's end
//! position, the one place a slot may be advanced to), relations (column names) and inserted
//! rows (their values as text). Every other message is recognised and skipped.

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
        /// The end of the commit record: everything up to here is decoded once the
        /// transaction has been read; the slot is advanced to it.
        end_lsn: Lsn,
    },
    Relation(Relation),
    Insert {
        relation_id: u32,
        /// The new row's values in the relation's column order, as text; `None` for NULL.
        values: Vec<Option<String>>,
    },
    /// Anything else (updates, deletes, truncates, origins, types, logical messages).
    Other(u8),
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
        b'I' => {
            let relation_id = r.u32()?;
            let kind = r.u8()?;
            if kind != b'N' {
                return Err(DecodeError(format!(
                    "insert carries tuple kind {:?}, not 'N'",
                    char::from(kind)
                )));
            }
            let count = r.u16()?;
            let mut values = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                values.push(match r.u8()? {
                    b'n' | b'u' => None,
                    b't' | b'b' => {
                        let len = r.u32()? as usize;
                        Some(String::from_utf8_lossy(r.take(len)?).into_owned())
                    }
                    other => {
                        return Err(DecodeError(format!(
                            "unknown column kind {:?}",
                            char::from(other)
                        )))
                    }
                });
            }
            Message::Insert {
                relation_id,
                values,
            }
        }
        b'U' | b'D' | b'T' | b'O' | b'Y' | b'M' => Message::Other(tag),
        other => {
            return Err(DecodeError(format!(
                "unknown message type {:?}",
                char::from(other)
            )))
        }
    })
}

/// A row inserted into a published table, by column name.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertedRow {
    /// `schema.table`.
    pub table: String,
    /// The position of the row's change in the log, for the operator (dead letters).
    pub lsn: Lsn,
    pub columns: Vec<(String, Option<String>)>,
}

/// A committed transaction: its rows, and where the slot may be advanced once they are
/// published.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub xid: u32,
    pub rows: Vec<InsertedRow>,
    pub end_lsn: Lsn,
}

/// Turns the messages of one decoding session into whole transactions. A session starts
/// with no relations known: pgoutput sends each relation before its first row.
#[derive(Debug, Default)]
pub struct TransactionAssembler {
    relations: HashMap<u32, Relation>,
    open: Option<(u32, Vec<InsertedRow>)>,
}

impl TransactionAssembler {
    /// Takes the next message (at `lsn`); returns a transaction when it commits.
    pub fn push(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<Option<Transaction>, DecodeError> {
        match decode(bytes)? {
            Message::Begin { xid } => {
                if self.open.is_some() {
                    return Err(DecodeError(format!(
                        "transaction {xid} begins inside another"
                    )));
                }
                self.open = Some((xid, Vec::new()));
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.id, relation);
            }
            Message::Insert {
                relation_id,
                values,
            } => {
                let relation = self.relations.get(&relation_id).ok_or_else(|| {
                    DecodeError(format!(
                        "row of relation {relation_id} before its description"
                    ))
                })?;
                let (_, rows) = self
                    .open
                    .as_mut()
                    .ok_or_else(|| DecodeError("row outside a transaction".into()))?;
                rows.push(InsertedRow {
                    table: format!("{}.{}", relation.namespace, relation.name),
                    lsn,
                    columns: relation.columns.iter().cloned().zip(values).collect(),
                });
            }
            Message::Commit { end_lsn } => {
                let (xid, rows) = self
                    .open
                    .take()
                    .ok_or_else(|| DecodeError("commit outside a transaction".into()))?;
                return Ok(Some(Transaction { xid, rows, end_lsn }));
            }
            Message::Other(_) => {}
        }
        Ok(None)
    }
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

    #[test]
    fn a_transaction_is_returned_whole_at_its_commit_with_rows_by_column_name() {
        let mut a = TransactionAssembler::default();
        let at = Lsn(0x100);
        assert_eq!(a.push(at, &begin(731)).unwrap(), None);
        assert_eq!(a.push(at, &relation()).unwrap(), None);
        assert_eq!(
            a.push(at, &insert("4503599627370496", Some("DE"))).unwrap(),
            None
        );
        assert_eq!(
            a.push(Lsn(0x180), &insert("4503599627370497", None))
                .unwrap(),
            None
        );
        let tx = a.push(Lsn(0x200), &commit(0x1_0000_0200)).unwrap().unwrap();
        assert_eq!(tx.xid, 731);
        assert_eq!(tx.end_lsn, Lsn(0x1_0000_0200));
        assert_eq!(tx.rows.len(), 2);
        assert_eq!(tx.rows[0].table, "public.orders");
        assert_eq!(
            tx.rows[1].columns,
            vec![
                ("order_id".to_owned(), Some("4503599627370497".to_owned())),
                ("country".to_owned(), None)
            ]
        );
        assert_eq!(tx.rows[1].lsn, Lsn(0x180));
        // An empty transaction (a heartbeat) still moves the position.
        a.push(at, &begin(732)).unwrap();
        a.push(at, b"Mx").unwrap();
        let tx = a.push(at, &commit(0x2_0000_0000)).unwrap().unwrap();
        assert!(tx.rows.is_empty());
        assert_eq!(tx.end_lsn, Lsn(0x2_0000_0000));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut a = TransactionAssembler::default();
        assert!(
            a.push(Lsn(1), &insert("1", None)).is_err(),
            "row before begin"
        );
        a.push(Lsn(1), &begin(1)).unwrap();
        assert!(
            a.push(Lsn(1), &insert("1", None)).is_err(),
            "unknown relation"
        );
        let rel = relation();
        for cut in 0..rel.len() {
            let _ = decode(&rel[..cut]);
        }
        assert!(decode(&rel[..rel.len() - 3]).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"Z").is_err());
        assert!(a.push(Lsn(1), &begin(2)).is_err(), "nested begin");
    }
}
