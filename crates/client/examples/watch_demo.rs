//! Node events on `/demo` as one stream: creation, data change, children changes, deletion.
//!
//! The classic way to follow a node takes three kinds of one-shot watches (exists, get,
//! children), each re-armed by hand after it fires, with changes between a fire and the re-arm
//! lost. Here one persistent watch delivers every event on `/demo`, in order, until dropped.
//!
//! ```text
//! cargo run -p corral-client --example watch_demo             # in-process Corral server
//! cargo run -p corral-client --example watch_demo -- HOST:PORT # an existing server
//! ```

// tests/examples.rs compiles every example into one crate, loading this once per example.
#[allow(clippy::duplicate_mod)]
mod common;

use corral_client::{Client, CreateMode, Error, EventType, WatchMode};

/// The events seen on `/demo`, in order.
pub async fn run(connect_string: &str) -> Result<Vec<(EventType, String)>, Error> {
    let client = Client::connect(connect_string).await?;
    // Start from a clean slate, as a rerun against an existing server may find leftovers.
    if client.exists("/demo").await?.is_some() {
        for child in client.children("/demo").await?.0 {
            client.delete(&format!("/demo/{child}"), None).await?;
        }
        client.delete("/demo", None).await?;
        println!("removed an old /demo");
    }

    let mut events = client.watch("/demo", WatchMode::NonRecursive).await?;
    println!("watching /demo");

    // Another session makes the changes, as another process would.
    let writer = Client::connect(connect_string).await?;
    let changes = tokio::spawn(async move {
        writer
            .create("/demo", b"hello", CreateMode::Persistent)
            .await?;
        writer.set_data("/demo", b"world", None).await?;
        writer
            .create("/demo/child", b"", CreateMode::Persistent)
            .await?;
        writer.delete("/demo/child", None).await?;
        writer.delete("/demo", None).await?;
        writer.close().await;
        Ok::<_, Error>(())
    });

    let mut seen = Vec::new();
    loop {
        let e = events.next_node_event().await?;
        println!("{:?} {}", e.event_type, e.path);
        seen.push((e.event_type, e.path.clone()));
        if e.event_type == EventType::NodeDeleted && e.path == "/demo" {
            break;
        }
    }
    changes
        .await
        .map_err(|e| Error::Protocol(e.to_string()))??;
    // Dropping the stream removes the watch from the server.
    drop(events);
    client.close().await;
    Ok(seen)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connect_string, _server) = common::server_from_args().await;
    let seen = run(&connect_string).await?;
    println!("{} events, done", seen.len());
    Ok(())
}
