//! Stores and reads back a few records through a running daemon.
//!
//! ```sh
//! envault serve &                       # in the directory holding envault.sock and data/
//! cargo run --example records
//! ```
//! The socket is `ENVAULT_SOCKET` or `./envault.sock`; the token is `ENVAULT_TOKEN` or the
//! contents of `./data/operator.token`. The example creates a database `example-<random>` with a
//! provider-managed key and leaves it in place for you to inspect (`envault db show …`).

use envault::api::RecordListQuery;
use envault::client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::var("ENVAULT_SOCKET").unwrap_or_else(|_| "envault.sock".into());
    let token = match std::env::var("ENVAULT_TOKEN") {
        Ok(token) => token,
        Err(_) => std::fs::read_to_string("data/operator.token")
            .map_err(|e| format!("no ENVAULT_TOKEN and cannot read data/operator.token: {e}"))?,
    };
    let client = Client::new(socket, Some(token.trim().to_string()));

    let name = format!(
        "example-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let db = client.create_database(&name, None, None).await?;
    println!(
        "created database {} ({}), key origin {}",
        db.name, db.id, db.key_origin
    );

    let records: [(&str, &[u8]); 3] = [
        ("customers/1", b"{\"name\": \"Ada\"}"),
        ("customers/2", b"{\"name\": \"Grace\"}"),
        (
            "notes/a b",
            b"keys may hold any UTF-8, slashes and spaces included",
        ),
    ];
    for (key, value) in records {
        client.put_record(&name, key, value).await?;
    }

    let page = client
        .list_records(&name, &RecordListQuery::default())
        .await?;
    println!("{} keys: {:?}", page.keys.len(), page.keys);
    for key in &page.keys {
        let value = client.get_record(&name, key).await?;
        println!("{key} = {}", String::from_utf8_lossy(&value));
    }
    Ok(())
}
