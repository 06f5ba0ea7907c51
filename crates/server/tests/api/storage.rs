use nexus_testkit::{Backend, TestServer, backends};

#[tokio::test]
async fn migrations_apply_on_every_backend_and_survive_restart() {
    for backend in backends() {
        let mut s = TestServer::start_on(backend).await;
        let id = s.kernel().server_id.clone();
        assert_eq!(id.len(), 32, "{backend:?}");
        s.restart().await;
        // Re-running migrations on an up-to-date database is a no-op, and the installation
        // keeps its identity.
        assert_eq!(s.kernel().server_id, id, "{backend:?}");
        assert_eq!(s.get("/health").await.status, 200);
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_inside_the_data_dir() {
    let s = TestServer::start_on(Backend::Sqlite).await;
    let db_file = s.config.data_dir.join("nexus.db");
    assert!(db_file.is_file());
    let mode: String = match &s.kernel().db {
        nexus_kernel::db::Db::Sqlite(pool) => {
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap_or_default()
        }
        nexus_kernel::db::Db::Postgres(_) => unreachable!(),
    };
    assert_eq!(mode, "wal");
}
