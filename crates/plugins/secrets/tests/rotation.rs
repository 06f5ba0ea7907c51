//! An interrupted master key rotation loses nothing, and running it again finishes it.

use nexus_kernel::config::Config;
use nexus_kernel::db::Db;
use nexus_secrets::crypto::Key;
use nexus_secrets::keyring::{self, Keyring};
use std::sync::Arc;

use nexus_secrets::store::{NewSecret, SecretRow, SecretStore};

async fn setup() -> (tempfile::TempDir, Config, Db, Arc<dyn SecretStore>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let db = Db::connect(&config.database_url(), Some(2)).await.unwrap_or_else(|e| panic!("{e}"));
    db.migrate(&[&nexus_kernel::MIGRATIONS, &nexus_secrets::MIGRATIONS]).await.unwrap_or_else(|e| panic!("{e}"));
    let store = nexus_secrets::store::open(&db, nexus_kernel::outbox::Outbox::new());
    (dir, config, db, store)
}

async fn read_all(ring: &Keyring, store: &dyn SecretStore, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let row = store.sealed(&format!("s/{i}"), None).await.unwrap_or_else(|e| panic!("{e}"));
        let row = row.unwrap_or_else(|| panic!("s/{i} missing"));
        let master = ring.key(&row.key_id).unwrap_or_else(|| panic!("no key {}", row.key_id));
        let dk = master.unwrap_key(&row.key_id, &row.id, &row.wrapped_key).unwrap_or_else(|e| panic!("{e}"));
        let plain = dk
            .decrypt_value(&row.id, 1, row.v_ciphertext.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        out.push(String::from_utf8_lossy(&plain).into_owned());
    }
    out
}

#[tokio::test]
async fn an_interrupted_rotation_is_resumed_without_losing_a_secret() {
    let (_dir, config, _db, store) = setup().await;
    let ring = Keyring::open(&config, store.as_ref()).await.unwrap_or_else(|e| panic!("{e}"));
    let old_id = ring.active_id.clone();
    let master = ring.active().cloned().unwrap_or_else(|| panic!("no active key"));
    for i in 0..10 {
        let id = format!("id-{i}");
        let row = SecretRow {
            id: id.clone(),
            path: format!("s/{i}"),
            metadata: "{}".into(),
            version: 1,
            created_at: 0,
            created_by: "u".into(),
            updated_at: 0,
            updated_by: "u".into(),
        };
        let dk = Key::generate();
        let wrapped = master.wrap(&old_id, &id, &dk);
        let ciphertext = dk.encrypt_value(&id, 1, format!("value-{i}").as_bytes());
        let new = NewSecret {
            row: &row,
            key_id: &old_id,
            wrapped_key: &wrapped,
            version_id: &format!("v-{i}"),
            ciphertext: &ciphertext,
        };
        store
            .create(
                &new,
                &nexus_kernel::events::EventBus::new().envelope("test", "secret.created", serde_json::json!({})),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let expected: Vec<String> = (0..10).map(|i| format!("value-{i}")).collect();

    // A rotation that stopped half-way: new key saved and recorded, half the rows re-wrapped.
    let new_key = Key::generate();
    let pending = config.data_dir.join("master.key.new");
    std::fs::write(&pending, format!("{}\n", new_key.to_base64().as_str())).unwrap_or_else(|e| panic!("{e}"));
    let new_id = "new-key-id";
    store.insert_master_key(new_id, &new_key.check_value(new_id), "pending", 1).await.unwrap_or_else(|e| panic!("{e}"));
    let rows = store.not_wrapped_by(new_id, 5).await.unwrap_or_else(|e| panic!("{e}"));
    for row in rows {
        let dk = master.unwrap_key(&row.key_id, &row.id, &row.wrapped_key).unwrap_or_else(|e| panic!("{e}"));
        let wrapped = new_key.wrap(new_id, &row.id, &dk);
        assert!(store.rewrap(&row.id, &row.key_id, new_id, &wrapped).await.unwrap_or(false));
    }

    // A server started now holds both keys and reads everything.
    let ring = Keyring::open(&config, store.as_ref()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ring.active_id, old_id, "the new key is not active before every row moved");
    assert_eq!(read_all(&ring, store.as_ref(), 10).await, expected);

    // Without the pending key file it refuses, saying why, instead of failing reads later.
    let aside = config.data_dir.join("aside");
    std::fs::rename(&pending, &aside).unwrap_or_else(|e| panic!("{e}"));
    let err = Keyring::open(&config, store.as_ref()).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("rotation is unfinished"), "{err}");
    std::fs::rename(&aside, &pending).unwrap_or_else(|e| panic!("{e}"));

    // Running the rotation again finishes it.
    let mut calls = 0;
    let mut progress = |_done: u64, _total: u64| calls += 1;
    let done = keyring::rotate(&config, store.as_ref(), &mut progress).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.new_key_id, new_id);
    assert_eq!(done.rewrapped, 5);
    assert!(calls >= 6);
    assert!(!pending.exists());
    let file = std::fs::read_to_string(config.data_dir.join("master.key")).unwrap_or_default();
    assert_eq!(file.trim(), new_key.to_base64().as_str());
    assert_eq!(store.count_not_wrapped_by(new_id).await.unwrap_or(-1), 0);
    let ring = Keyring::open(&config, store.as_ref()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ring.active_id, new_id);
    assert_eq!(read_all(&ring, store.as_ref(), 10).await, expected);
}

#[tokio::test]
async fn rotation_with_a_configured_key_takes_the_new_one_from_the_environment() {
    let (_dir, mut config, _db, store) = setup().await;
    config.secrets.master_key = Some(Key::generate().to_base64().to_string());
    Keyring::open(&config, store.as_ref()).await.unwrap_or_else(|e| panic!("{e}"));
    // NEXUS_NEW_MASTER_KEY is not set in this process: a clear refusal, nothing changed.
    if std::env::var_os(keyring::NEW_KEY_ENV).is_none() {
        let mut progress = |_: u64, _: u64| {};
        let err = keyring::rotate(&config, store.as_ref(), &mut progress).await.err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains(keyring::NEW_KEY_ENV)));
        assert!(!config.data_dir.join("master.key").exists() && !config.data_dir.join("master.key.new").exists());
    }
}
