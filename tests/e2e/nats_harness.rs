//! The NATS servers of the NATS backend's end-to-end tests
//! (`tests/support/nats_servers.rs`), and tests of them.

#[path = "../support/nats_servers.rs"]
#[allow(dead_code)] // shared with xtask, which uses other parts
mod nats_servers;

pub(crate) use nats_servers::{Nats, NatsNode};

#[test]
fn a_cluster_of_three_survives_the_loss_of_one_node() {
    let dir = crate::harness::TempDir::new("nats-harness");
    let Some(mut nats) = Nats::cluster(&dir.join("nats"), 3) else {
        return;
    };
    assert_eq!(nats.urls().split(',').count(), 3);
    nats.nodes[1].kill();
    assert!(!nats.nodes[1].is_healthy());
    nats.nodes[1].start();
    assert!(nats.nodes.iter().all(NatsNode::is_healthy));
}

#[test]
fn a_single_node_starts_again_on_its_store() {
    let dir = crate::harness::TempDir::new("nats-harness-single");
    let Some(mut nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    assert_eq!(nats.urls(), nats.nodes[0].url());
    nats.nodes[0].kill();
    nats.nodes[0].start();
    assert!(nats.nodes[0].is_healthy());
}
