//! What a node's engine publishes: the JSON of `GET /containers/json` and `GET /services`
//! reduced to TCP port numbers.

use std::net::IpAddr;

use serde::Deserialize;

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Ports")]
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
struct ContainerPort {
    #[serde(rename = "IP")]
    ip: Option<String>,
    #[serde(rename = "PublicPort")]
    public_port: Option<u16>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

/// Published TCP ports of `GET /containers/json`, skipping those bound to loopback (the proxy
/// reaches nodes at their bridge address).
pub(super) fn container_ports(json: &[u8]) -> Result<Vec<u16>, serde_json::Error> {
    let containers: Vec<Container> = serde_json::from_slice(json)?;
    Ok(containers
        .into_iter()
        .flat_map(|c| c.ports.unwrap_or_default())
        .filter(|p| p.kind.as_deref().unwrap_or("tcp") == "tcp")
        .filter(|p| {
            !p.ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
        })
        .filter_map(|p| p.public_port)
        .filter(|p| *p != 0)
        .collect())
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "Endpoint")]
    endpoint: Option<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    #[serde(rename = "Ports")]
    ports: Option<Vec<ServicePort>>,
}

#[derive(Deserialize)]
struct ServicePort {
    #[serde(rename = "Protocol")]
    protocol: Option<String>,
    #[serde(rename = "PublishedPort")]
    published_port: Option<u16>,
    #[serde(rename = "PublishMode")]
    publish_mode: Option<String>,
}

/// TCP ports that `GET /services` publishes through the ingress routing mesh (host-mode ports
/// show up in the containers' listing, on the nodes that run a task).
pub(super) fn service_ports(json: &[u8]) -> Result<Vec<u16>, serde_json::Error> {
    let services: Vec<Service> = serde_json::from_slice(json)?;
    Ok(services
        .into_iter()
        .filter_map(|s| s.endpoint?.ports)
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("tcp") == "tcp")
        .filter(|p| p.publish_mode.as_deref().unwrap_or("ingress") == "ingress")
        .filter_map(|p| p.published_port)
        .filter(|p| *p != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_listing_gives_published_tcp_ports() {
        let json = br#"[
          {"Id": "a", "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
            {"IP": "127.0.0.1", "PrivatePort": 22, "PublicPort": 2222, "Type": "tcp"}
          ]},
          {"Id": "b", "Ports": null},
          {"Id": "c", "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 81, "Type": "tcp"}]}
        ]"#;
        assert_eq!(container_ports(json).unwrap(), vec![8080, 8080, 81]);
        assert!(container_ports(b"{}").is_err());
    }

    #[test]
    fn service_listing_gives_ingress_ports() {
        let json = br#"[
          {"ID": "x", "Endpoint": {"Ports": [
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8000, "PublishMode": "ingress"},
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8001, "PublishMode": "host"},
            {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"}
          ]}},
          {"ID": "y", "Endpoint": {}},
          {"ID": "z"}
        ]"#;
        assert_eq!(service_ports(json).unwrap(), vec![8000]);
    }
}
