//! Tests of the key store.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;
use std::cell::RefCell;

struct Recorder(RefCell<Vec<(String, Event)>>);

impl KeyAudit for Recorder {
    fn record(
        &self,
        workspace: &str,
        _create: bool,
        event: &Event,
    ) -> Result<Option<Receipt>, KeyError> {
        let mut events = self.0.borrow_mut();
        events.push((workspace.to_string(), event.clone()));
        Ok(Some(Receipt {
            seq: events.len() as u64 - 1,
            hash: crate::ChainHash([0; 32]),
        }))
    }
}

struct Failing;

impl KeyAudit for Failing {
    fn record(&self, workspace: &str, _: bool, _: &Event) -> Result<Option<Receipt>, KeyError> {
        Err(KeyError::Audit {
            workspace: workspace.into(),
            reason: "disk full".into(),
        })
    }
}

fn by() -> ChangedBy {
    ChangedBy {
        actor: "alice".into(),
        ip: None,
        via: Via::Local,
    }
}

#[test]
fn key_text_round_trip_and_rejections() {
    let secret = URL_SAFE_NO_PAD.encode([0xffu8; 32]);
    assert_eq!(secret.len(), KEY_SECRET_CHARS);
    let text = format!("clk_0123456789abcdef_{secret}");
    assert_eq!(text.len(), KEY_TEXT_CHARS);
    let parsed = parse_key_text(&text).unwrap();
    assert_eq!(parsed.id, "0123456789abcdef");
    assert_eq!(parsed.secret, secret);
    for bad in [
        "",
        "clk_",
        &text[..text.len() - 1],
        &format!("{text}x"),
        &text.replace("clk_", "CLK_"),
        &text.replace("0123456789abcdef", "0123456789ABCDEF"),
        &format!("clk_0123456789abcdef_{}", "é".repeat(21)),
    ] {
        assert!(parse_key_text(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn create_check_rotate_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(dir.path()).unwrap();
    let audit = Recorder(RefCell::new(Vec::new()));
    let issued = store.create("acme", Scope::Read, &by(), &audit).unwrap();
    assert!(parse_key_text(&issued.text).is_some());
    let mode = fs::metadata(dir.path().join(KEYS_FILE_NAME))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = fs::read_to_string(dir.path().join(KEYS_FILE_NAME)).unwrap();
    let secret = parse_key_text(&issued.text).unwrap().secret;
    assert!(!stored.contains(secret), "the secret must not be stored");
    assert!(matches!(store.check(&issued.text).0, KeyCheck::Valid(k) if k.scope == Scope::Read));

    // Another handle (the server) sees the change through the file.
    let other = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(other.check(&issued.text).0, KeyCheck::Valid(_)));

    let mut wrong = issued.text.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        store.check(&wrong).0,
        KeyCheck::Invalid {
            key_id: Some(issued.key.id.clone()),
            reason: "wrong_secret"
        }
    );

    let rotated = store.rotate(&issued.key.id, None, &by(), &audit).unwrap();
    assert_eq!(rotated.key.id, issued.key.id);
    assert!(matches!(
        store.check(&issued.text).0,
        KeyCheck::Invalid {
            reason: "wrong_secret",
            ..
        }
    ));
    assert!(matches!(other.check(&rotated.text).0, KeyCheck::Valid(_)));

    assert!(matches!(
        store.revoke(&issued.key.id, Some("other"), &by(), &audit),
        Err(KeyError::NotFound(_))
    ));
    store
        .revoke(&issued.key.id, Some("acme"), &by(), &audit)
        .unwrap();
    assert!(matches!(
        other.check(&rotated.text).0,
        KeyCheck::Invalid {
            reason: "revoked",
            ..
        }
    ));
    assert!(matches!(
        store.rotate(&issued.key.id, None, &by(), &audit),
        Err(KeyError::Revoked(_))
    ));

    let events = audit.0.borrow();
    let types: Vec<&str> = events.iter().map(|(_, e)| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [EVENT_KEY_CREATED, EVENT_KEY_ROTATED, EVENT_KEY_REVOKED]
    );
    assert!(events
        .iter()
        .all(|(w, e)| w == "acme" && e.actor == "alice"));
    assert_eq!(store.list(Some("acme")).unwrap().len(), 1);
    assert!(store.list(Some("other")).unwrap().is_empty());
}

#[test]
fn a_failed_audit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.create("acme", Scope::Admin, &by(), &Failing),
        Err(KeyError::Audit { .. })
    ));
    assert!(store.list(None).unwrap().is_empty());
    assert!(matches!(
        store.create("../etc", Scope::Admin, &by(), &Failing),
        Err(KeyError::BadWorkspace(_))
    ));
}
