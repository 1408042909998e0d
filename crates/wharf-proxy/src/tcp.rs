//! Plain TCP through a service's address (redis, databases): each connection goes to
//! the backend the balancer picks (another one if that refuses), and bytes are copied
//! both ways until either side closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::route::Route;

/// Serves `route` on `listener` until `shutdown`.
pub async fn serve_tcp(listener: TcpListener, route: Arc<Route>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(crate::MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let (mut client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = client.set_nodelay(true);
        let route = route.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut tried = None;
            for _ in 0..2 {
                let Some(in_flight) = route.choose_or_wait(tried, route.pause()).await else {
                    return;
                };
                let addr = in_flight.backend().addr;
                let connect =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr));
                match connect.await {
                    Ok(Ok(mut backend)) => {
                        let _ = backend.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        drop(in_flight);
                        return;
                    }
                    _ => tried = Some(addr),
                }
            }
        });
    }
}
