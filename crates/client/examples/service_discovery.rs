//! Service registration and discovery: three time servers register under `/services/time`, a
//! client picks one at random for each request, one server leaves and the list follows.
//!
//! Each server registers an ephemeral node holding its address, so a server that stops (or
//! crashes: its session expires) leaves the list by itself. The client keeps a live list
//! through a children cache instead of listing the directory before every request.
//!
//! ```text
//! cargo run -p corral-client --example service_discovery [-- HOST:PORT]
//! ```

// tests/examples.rs compiles every example into one crate, loading this once per example.
#[allow(clippy::duplicate_mod)]
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use corral_client::recipes::{Registration, ServiceDiscovery, ServiceInstance, ServiceRegistry};
use corral_client::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A time server: answers each connection with its name and the time, then hangs up.
struct TimeServer {
    name: String,
    address: String,
    session: Client,
    /// Held for the server's life; its session ending removes it too.
    _registration: Registration,
    accept: JoinHandle<()>,
}

async fn start_time_server(connect_string: &str, name: &str) -> Result<TimeServer, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Protocol(e.to_string()))?
        .to_string();
    let reply_name = name.to_string();
    let accept = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let _ = conn
                .write_all(format!("{reply_name}: time {secs}").as_bytes())
                .await;
        }
    });
    let session = Client::connect(connect_string).await?;
    let registration = ServiceRegistry::new(&session, "/services")
        .register(
            "time",
            &ServiceInstance::new(&address).with_metadata("name", name),
        )
        .await?;
    println!(
        "{name}: listening on {address}, registered as {}",
        registration.path()
    );
    Ok(TimeServer {
        name: name.to_string(),
        address,
        session,
        _registration: registration,
        accept,
    })
}

/// Asks a picked instance for the time.
async fn ask(discovery: &ServiceDiscovery) -> Result<String, Error> {
    let instance = discovery
        .pick_random()
        .ok_or_else(|| Error::Protocol("no server registered".into()))?;
    let mut conn = TcpStream::connect(&instance.address)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    println!("client: picked {} -> {reply:?}", instance.address);
    Ok(instance.metadata.get("name").cloned().unwrap_or_default())
}

/// What the run saw.
#[derive(Debug)]
pub struct Outcome {
    /// The server names the client reached while all three were up.
    pub before: Vec<String>,
    /// The server that left.
    pub gone: String,
    /// The server names reached after it left.
    pub after: Vec<String>,
}

pub async fn run(connect_string: &str) -> Result<Outcome, Error> {
    let mut servers = Vec::new();
    for name in ["server-a", "server-b", "server-c"] {
        servers.push(start_time_server(connect_string, name).await?);
    }

    let client = Client::connect(connect_string).await?;
    let mut discovery = ServiceRegistry::new(&client, "/services")
        .discover("time")
        .await?;
    let ours: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    discovery
        .wait_for(|l| ours.iter().all(|a| l.iter().any(|i| i.address == *a)))
        .await?;
    println!("client: {} servers registered", discovery.instances().len());

    let mut before = Vec::new();
    for _ in 0..6 {
        before.push(ask(&discovery).await?);
    }

    // One server shuts down: it stops listening and its session ends.
    let leaving = servers.remove(1);
    leaving.accept.abort();
    leaving.session.close().await;
    println!("{}: stopped", leaving.name);
    let list = discovery
        .wait_for(|l| !l.iter().any(|i| i.address == leaving.address))
        .await?;
    let names: Vec<_> = list.iter().map(|i| i.address.as_str()).collect();
    println!("client: server list is now {names:?}");

    let mut after = Vec::new();
    for _ in 0..6 {
        after.push(ask(&discovery).await?);
    }

    drop(discovery);
    client.close().await;
    for s in servers {
        s.accept.abort();
        s.session.close().await;
    }
    Ok(Outcome {
        before,
        gone: leaving.name,
        after,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connect_string, _server) = common::server_from_args().await;
    let outcome = run(&connect_string).await?;
    println!(
        "reached {:?} before and {:?} after {} left; done",
        outcome.before, outcome.after, outcome.gone
    );
    Ok(())
}
