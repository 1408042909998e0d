//! An environment's entry: its validation, where the definition is checked.
//!
//! Routes are tried most specific first (a route naming a host before one that does
//! not, then the longest path), so the order they are written in never matters; two
//! routes that would match the same requests are an error.

use crate::definition::{Checker, key};
use crate::model::{Definition, Ingress, IngressRoute, PortSpec};
use crate::raw::RawIngress;
use crate::suggest::hint_for;
use crate::yaml::PathSegment;

pub(crate) fn check(
    checker: &mut Checker<'_>,
    definition: &Definition,
    env: &str,
    raw: &RawIngress,
) -> Ingress {
    let base = [key("environments"), key(env), key("ingress")];
    let at = |rest: &[PathSegment]| {
        let mut path = base.to_vec();
        path.extend_from_slice(rest);
        path
    };
    let mut address = |text: &str, field: &str| match text.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.port() != 0 => addr,
        _ => {
            checker.report(
                &at(&[key(field)]),
                format!(
                    "the ingress of `{env}` cannot listen on `{text}`: not an address and port"
                ),
                Some(
                    "write an IP address and a port, such as `127.0.0.1:8080` or `0.0.0.0:80`"
                        .into(),
                ),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let listen = address(&raw.listen, "listen");
    let tls_listen = raw.tls_listen.as_deref().map(|t| address(t, "tls_listen"));
    if tls_listen.is_some_and(|t| t.port() != 0 && t == listen) {
        checker.report(
            &at(&[key("tls_listen")]),
            format!("the ingress of `{env}` takes HTTP and HTTPS on the same address"),
            Some("give `tls_listen` a port of its own, such as 8443".into()),
        );
    }
    let services: Vec<&str> = definition.services.keys().map(String::as_str).collect();
    let mut routes: Vec<IngressRoute> = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let here = |k: &str| at(&[key("routes"), PathSegment::Index(i), key(k)]);
        match definition.services.get(&route.service) {
            None => checker.report(
                &here("service"),
                format!(
                    "the ingress of `{env}` routes to unknown service `{}`",
                    route.service
                ),
                Some(hint_for(&route.service, "service", &services)),
            ),
            Some(s) if s.port.is_none() => checker.report(
                &here("service"),
                format!(
                    "service `{}` has no port for the ingress to send requests to",
                    route.service
                ),
                Some("give the service a `port:`, or remove the route".into()),
            ),
            Some(s) if s.tcp => checker.report(
                &here("service"),
                format!(
                    "the ingress routes HTTP, and service `{}` is `protocol: tcp`",
                    route.service
                ),
                Some("reach a tcp service at its own address (`{{ services.NAME.url }}`)".into()),
            ),
            Some(_) => {}
        }
        let host = route.host.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &host {
            let valid = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                checker.report(
                    &here("host"),
                    format!("`{h}` is not a host name"),
                    Some("write a name such as `shop.example.com`, without scheme or port".into()),
                );
            }
        }
        let path = match route.path.as_deref() {
            None => "/".to_owned(),
            Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) => {
                let trimmed = p.trim_end_matches('/');
                if trimmed.is_empty() {
                    "/".to_owned()
                } else {
                    trimmed.to_owned()
                }
            }
            Some(p) => {
                checker.report(
                    &here("path"),
                    format!("`{p}` is not a path prefix"),
                    Some("start it with `/`, without a query, such as `/api`".into()),
                );
                "/".to_owned()
            }
        };
        if let Some(j) = routes.iter().position(|r| r.host == host && r.path == path) {
            checker.report(
                &at(&[key("routes"), PathSegment::Index(i)]),
                format!(
                    "routes {j} and {i} of the ingress of `{env}` both take {} with paths under `{path}`",
                    host.as_deref().map(|h| format!("host `{h}`")).unwrap_or("any host".into())
                ),
                Some("remove one, or give them different hosts or paths".into()),
            );
        }
        if route.tls.is_some() && host.is_none() {
            checker.report(
                &here("tls"),
                "a route with `tls` names the `host` its certificate is for".into(),
                Some("add `host: shop.example.com`".into()),
            );
        }
        if let (Some(tls), Some(h)) = (&route.tls, &host) {
            if h.parse::<std::net::IpAddr>().is_ok()
                || h.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit()))
            {
                checker.report(
                    &here("host"),
                    format!("`{h}` is an address: a certificate is chosen by a host name"),
                    Some("route a name such as `shop.example.com` with `tls`".into()),
                );
            }
            let other = routes.iter().position(|r| {
                r.host.as_ref() == Some(h)
                    && r.tls
                        .as_ref()
                        .is_some_and(|t| t.cert != tls.cert || t.key != tls.key)
            });
            if let Some(j) = other {
                checker.report(
                    &here("tls"),
                    format!("routes {j} and {i} give host `{h}` different certificates"),
                    Some("a host has one certificate: name the same secrets in both".into()),
                );
            }
        }
        if route.tls.is_some() && tls_listen.is_none() {
            checker.report(
                &here("tls"),
                format!("the ingress of `{env}` has a route with `tls` but no `tls_listen`"),
                Some("add `tls_listen: 127.0.0.1:8443` to the ingress".into()),
            );
        }
        routes.push(IngressRoute {
            host,
            path,
            service: route.service.clone(),
            strip_prefix: route.strip_prefix,
            tls: route.tls.as_ref().map(|t| crate::model::RouteTls {
                cert: t.cert.clone(),
                key: t.key.clone(),
            }),
        });
    }
    if raw.routes.is_empty() {
        checker.report(
            &at(&[]),
            format!("the ingress of `{env}` has no routes"),
            Some("add `routes: [{ path: /, service: web }]`".into()),
        );
    }
    for (name, service) in &definition.services {
        let fixed = match &service.port {
            Some(PortSpec::Fixed(p)) => Some(*p),
            _ => None,
        };
        let ours = [("listen", Some(listen)), ("tls_listen", tls_listen)];
        for ((what, port), (field, addr)) in
            [("port", fixed), ("address_port", service.address_port)]
                .into_iter()
                .flat_map(|p| ours.into_iter().map(move |o| (p, o)))
        {
            let Some(addr) = addr else { continue };
            if port == Some(addr.port()) {
                checker.report(
                    &at(&[key(field)]),
                    format!(
                        "the ingress of `{env}` listens on port {}, the `{what}` of service `{name}`",
                        addr.port()
                    ),
                    Some("give the ingress or the service another port".into()),
                );
            }
        }
    }
    if tls_listen.is_some() && routes.iter().all(|r| r.tls.is_none()) {
        checker.report(
            &at(&[key("tls_listen")]),
            format!("the ingress of `{env}` listens for HTTPS, but no route has `tls`"),
            Some(
                "give a route `tls: { cert: TLS_CERT, key: TLS_KEY }`, or remove `tls_listen`"
                    .into(),
            ),
        );
    }
    Ingress {
        listen,
        tls_listen,
        routes,
    }
}

/// Environments that run on this machine (no hosts of their own) share its ports: two
/// ingresses there cannot listen on the same one.
pub(crate) fn check_shared_ports(checker: &mut Checker<'_>, definition: &Definition) {
    let mut taken: Vec<(&str, u16)> = Vec::new();
    for (env, environment) in &definition.environments {
        let Some(ingress) = environment
            .ingress
            .as_ref()
            .filter(|_| environment.hosts.is_none())
        else {
            continue;
        };
        for (field, addr) in [
            ("listen", Some(ingress.listen)),
            ("tls_listen", ingress.tls_listen),
        ] {
            let Some(port) = addr.map(|a| a.port()).filter(|p| *p != 0) else {
                continue;
            };
            if let Some((other, _)) = taken.iter().find(|(_, p)| *p == port) {
                checker.report(
                    &[key("environments"), key(env), key("ingress"), key(field)],
                    format!("the ingresses of `{other}` and `{env}` both listen on port {port} of this machine"),
                    Some("give each environment's ingress its own port".into()),
                );
            }
            taken.push((env, port));
        }
    }
}
