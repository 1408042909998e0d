//! Where a container on the engine's default bridge reaches its host: the bridge's
//! gateway. The engine lists it in the network's IPAM configuration when it was set
//! (`bip`, `default-address-pools`); otherwise it is the subnet's first address, which
//! is what the engine gives the bridge by default.

use std::net::{IpAddr, Ipv4Addr};

use bollard::models::NetworkInspect;

/// The gateway of a bridge network as the engine describes it.
pub fn bridge_gateway(network: &NetworkInspect) -> Option<IpAddr> {
    let configs = network.ipam.as_ref()?.config.as_ref()?;
    let given = configs
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4);
    given.or_else(|| {
        configs
            .iter()
            .filter_map(|c| first_address(c.subnet.as_deref()?))
            .next()
    })
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` -> `172.17.0.1`).
fn first_address(subnet: &str) -> Option<IpAddr> {
    let (base, bits) = subnet.split_once('/')?;
    let base: Ipv4Addr = base.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if !(1..=30).contains(&bits) {
        return None;
    }
    let mask = u32::MAX << (32 - bits);
    Some(IpAddr::V4(Ipv4Addr::from((u32::from(base) & mask) + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig};

    fn network(configs: &[(Option<&str>, Option<&str>)]) -> NetworkInspect {
        NetworkInspect {
            ipam: Some(Ipam {
                config: Some(
                    configs
                        .iter()
                        .map(|(subnet, gateway)| IpamConfig {
                            subnet: subnet.map(str::to_owned),
                            gateway: gateway.map(str::to_owned),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_gateway_the_engine_lists_is_taken() {
        let n = network(&[(Some("10.9.0.0/24"), Some("10.9.0.5"))]);
        assert_eq!(bridge_gateway(&n), Some("10.9.0.5".parse().unwrap()));
    }

    #[test]
    fn without_one_it_is_the_subnets_first_address() {
        let n = network(&[(Some("172.17.0.0/16"), None)]);
        assert_eq!(bridge_gateway(&n), Some("172.17.0.1".parse().unwrap()));
        let n = network(&[(Some("172.18.5.7/24"), None)]);
        assert_eq!(bridge_gateway(&n), Some("172.18.5.1".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_gateway_or_a_malformed_subnet_gives_none() {
        let n = network(&[
            (Some("fd00::/64"), Some("fd00::1")),
            (Some("nonsense"), None),
        ]);
        assert_eq!(bridge_gateway(&n), None);
        assert_eq!(bridge_gateway(&NetworkInspect::default()), None);
    }
}
