//! Registering on the Attach port as another process would: the tests of who may attach.

use std::net::SocketAddr;

/// A process's registration as a media node: the control plane's answer and, while it is held,
/// the process's side of the stream.
pub struct Registration {
    pub answer: Result<tonic::Streaming<treffpunkt_proto::v1::ControlMessage>, tonic::Status>,
    pub to_control_plane: tokio::sync::mpsc::Sender<treffpunkt_proto::v1::NodeMessage>,
}

/// Registers with `node_id` on the control plane at `grpc`, as another process would, with a
/// claim signed with `key` if there is one; the stream ends when the registration is dropped.
pub async fn register_as(
    grpc: SocketAddr,
    node_id: &str,
    key: Option<&treffpunkt_proto::grant::Keyring>,
) -> Registration {
    register(grpc, None, node_id, "", key)
        .await
        .expect("the Attach port answers")
}

/// Registers with `node_id` for `pool` on the control plane at `grpc`, over `tls` if given (a
/// plain connection otherwise), with a claim signed with `key` if there is one. `Err` when no
/// connection comes about (a TLS handshake that fails, say).
pub async fn register(
    grpc: SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
    node_id: &str,
    pool: &str,
    key: Option<&treffpunkt_proto::grant::Keyring>,
) -> Result<Registration, tonic::transport::Error> {
    use treffpunkt_proto::v1::{self, control_plane_client::ControlPlaneClient, node_message};
    let instance_id = "1".to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let proof = key.map(|key| {
        key.sign_attach(&v1::AttachClaim {
            node_id: node_id.to_owned(),
            instance_id: instance_id.clone(),
            issued_at_unix_ms: now.as_millis() as u64,
        })
    });
    let endpoint = match tls {
        Some(tls) => {
            tonic::transport::Endpoint::from_shared(format!("https://{grpc}"))?.tls_config(tls)?
        }
        None => tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?,
    };
    let mut client = ControlPlaneClient::new(endpoint.connect().await?);
    let register = v1::Register {
        node_id: node_id.to_owned(),
        pool: pool.to_owned(),
        capacity: Some(v1::Capacity {
            max_participants: 1000,
        }),
        media_addresses: vec![v1::MediaAddress {
            protocol: v1::TransportProtocol::Udp as i32,
            ip: "127.0.0.1".into(),
            port: 9,
        }],
        instance_id,
        proof,
        ..v1::Register::default()
    };
    let (to_control_plane, messages) = tokio::sync::mpsc::channel(4);
    to_control_plane
        .send(v1::NodeMessage::new(node_message::Kind::Register(register)))
        .await
        .expect("the stream takes the registration");
    let messages = tokio_stream::wrappers::ReceiverStream::new(messages);
    let answer = client
        .attach(messages)
        .await
        .map(tonic::Response::into_inner);
    Ok(Registration {
        answer,
        to_control_plane,
    })
}
