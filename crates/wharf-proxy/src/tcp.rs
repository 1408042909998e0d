//! Plain TCP through a service's address (redis, databases): each connection goes to
//! the backend the balancer picks (another one if that refuses), and bytes are copied
//! both ways until either side closes.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::route::Route;

/// Serves `route` on `listener` until `shutdown`.
pub async fn serve_tcp(listener: TcpListener, route: Arc<Route>, shutdown: CancellationToken) {
    let acceptor = crate::accept::Acceptor::new(listener, shutdown);
    while let Some(accepted) = acceptor.next().await {
        let (mut client, permit) = (accepted.tcp, accepted.permit);
        let route = route.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut tried = None;
            for _ in 0..2 {
                let Some(in_flight) = route
                    .choose_or_wait(tried.as_ref(), route.pause(), None)
                    .await
                else {
                    return;
                };
                let target = in_flight.backend().target.clone();
                match target.connect().await {
                    Ok(mut backend) => {
                        in_flight.backend().record(crate::Outcome::Answered);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        drop(in_flight);
                        return;
                    }
                    Err(_) => {
                        in_flight.backend().record(crate::Outcome::ConnectFailed);
                        tried = Some(target);
                    }
                }
            }
        });
    }
    // Connections go on until their ends close them, up to this.
    acceptor.drained(std::time::Duration::from_secs(30)).await;
}
