//! The shop's inventory service: answers stock levels over HTTP/1.1.
//! Uses only the standard library so its artifact is one static-enough binary.

use std::env;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() {
    let port = env::var("PORT").unwrap_or_else(|_| "7303".into());
    // Loopback unless told otherwise (in a container it must listen on its interface).
    let address = env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = TcpListener::bind(format!("{address}:{port}")).unwrap_or_else(|e| {
        eprintln!("inventory: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    eprintln!("inventory: listening on {address}:{port}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || handle(stream));
    }
}

fn handle(mut stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain headers; the demo never reads a body.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = route(path);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn route(path: &str) -> (&'static str, String) {
    let var = |k: &str| env::var(k).unwrap_or_default();
    match path {
        "/health" => ("200 OK", "{\"ok\":true}".into()),
        "/" | "/stock" => {
            let low = var("LOW_STOCK_THRESHOLD");
            let body = format!(
                "{{\"service\":\"inventory\",\"env\":\"{}\",\"version\":\"{}\",\"low_stock_threshold\":\"{low}\",\"stock\":{{\"tea\":12,\"coffee\":3,\"cocoa\":0}}}}",
                var("WHARF_ENV"),
                var("WHARF_VERSION")
            );
            ("200 OK", body)
        }
        _ => ("404 Not Found", "{\"error\":\"not found\"}".into()),
    }
}
