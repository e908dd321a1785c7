//! The pump on tokio-tungstenite: the few lines a server needs to adapt its WebSocket library.

use std::future::ready;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use terminals::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

pub fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Binary(b) => Message::Binary(b),
        Frame::Text(t) => Message::text(t),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(c) => Message::Close(c.map(|(code, reason)| CloseFrame {
            code: code.into(),
            reason: reason.into(),
        })),
    }
}

pub fn to_frame(message: Message) -> Option<Frame> {
    Some(match message {
        Message::Binary(b) => Frame::Binary(b),
        Message::Text(t) => Frame::Text(t.as_str().to_owned()),
        Message::Ping(b) => Frame::Ping(b),
        Message::Pong(b) => Frame::Pong(b),
        Message::Close(c) => Frame::Close(c.map(|c| (c.code.into(), c.reason.as_str().to_owned()))),
        Message::Frame(_) => return None,
    })
}

/// Splits a WebSocket into the sink and stream of frames that `terminals::pump` takes.
#[allow(clippy::type_complexity)]
pub fn frames<S>(
    ws: WebSocketStream<S>,
) -> (
    impl Sink<Frame, Error = Error> + Unpin,
    impl Stream<Item = Result<Frame, Error>> + Unpin,
)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = ws.split();
    let sink = sink.with(|frame| ready(Ok::<_, Error>(to_message(frame))));
    let stream = stream.filter_map(|m| ready(m.map(to_frame).transpose()));
    (sink, stream)
}
