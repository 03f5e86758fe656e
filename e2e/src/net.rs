//! Loopback addresses. Linux routes all of 127.0.0.0/8 to `lo`, so every pod, node and Service
//! gets an address of its own without any network setup. Clusters that run at the same time
//! (parallel tests, `make cluster-up`) use different blocks, chosen by an index below 14:
//!
//! - node `n` (1-based, at most 15) of block `i` owns 127.(16·i + n).0.0/16: the node is .0.1,
//!   its pods get .0.2 upwards;
//! - Service cluster IPs of block `i` come from 127.(240 + i).0.0/16 (the API server allocates
//!   them; the `kubernetes` Service is .0.1).

use std::net::Ipv4Addr;

/// The largest block index and node count the layout has room for.
pub const MAX_INDEX: u8 = 13;
pub const MAX_NODES: u8 = 15;

fn node_octet(index: u8, node: u8) -> u8 {
    16 * index + node
}

/// The address of node `node` (1-based) of block `index`.
pub fn node_ip(index: u8, node: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, node_octet(index, node), 0, 1)
}

/// The `n`-th pod address (0-based) of a node.
pub fn pod_ip(index: u8, node: u8, n: u16) -> Ipv4Addr {
    let host = n + 2;
    Ipv4Addr::new(127, node_octet(index, node), (host >> 8) as u8, host as u8)
}

/// How many pod addresses a node has.
pub const PODS_PER_NODE: u16 = u16::MAX - 2;

/// The API server's `--service-cluster-ip-range` for block `index`.
pub fn service_cidr(index: u8) -> String {
    format!("127.{}.0.0/16", 240 + index)
}

/// The `kubernetes` Service's cluster IP in block `index` (the first of its range), where
/// pods reach the API server.
pub fn kubernetes_service_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 240 + index, 0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..=MAX_INDEX {
            for node in 1..=MAX_NODES {
                assert!(seen.insert(node_octet(index, node)), "{index}/{node}");
            }
            assert!(node_octet(index, MAX_NODES) < 240);
        }
        assert_eq!(pod_ip(1, 2, 0), Ipv4Addr::new(127, 18, 0, 2));
        assert_eq!(pod_ip(0, 1, 300), Ipv4Addr::new(127, 1, 1, 46));
        assert_eq!(
            pod_ip(0, 1, PODS_PER_NODE - 1),
            Ipv4Addr::new(127, 1, 255, 254)
        );
        assert_eq!(service_cidr(3), "127.243.0.0/16");
        assert_eq!(kubernetes_service_ip(3), Ipv4Addr::new(127, 243, 0, 1));
    }
}
