//! What every example does before its own work: pick the server to talk to.

use corral_server::testing::TestServer;

/// The server named as the first argument, or else a Corral server started in-process. The
/// in-process server runs while the returned handle lives, so hold it until the end of `main`.
pub async fn server_from_args() -> (String, Option<TestServer>) {
    if let Some(connect_string) = std::env::args().nth(1) {
        return (connect_string, None);
    }
    let server = TestServer::start().await;
    println!("started an in-process Corral server at {}", server.addr());
    (server.connect_string(), Some(server))
}
