//! `names`: the name service. Clients register an endpoint under a name and look
//! names up (`rt::service::label::NAMES_*`); the registry is `ucore::names`.
//!
//! Each client reaches the service through an endpoint capability `init` minted with the
//! client's own badge, so the badge is the owner. `init` (badge 0, the unbadged
//! capability) reports deaths (`NAMES_OWNER_DIED`), and every name the dead client owned is
//! released (its endpoint capability deleted here).
//!
//! Weak spot: a name's endpoint is handed out as a copy with the rights it was registered
//! with; a client cannot register a weaker view than it holds except by copying first.
#![no_std]
#![no_main]

extern crate alloc;

use abi::{Error, Handle, MessageInfo};
use rt::ipc;
use rt::service::{self, label, slot, slots};
use ucore::names::{NameError, PER_OWNER_MAX, REGISTRY_MAX, Registry};

fn code(error: Error) -> u64 {
    u64::from(error.code())
}

fn name_error(error: NameError) -> u64 {
    code(match error {
        NameError::InvalidName => Error::InvalidArgument,
        NameError::Taken => Error::PermissionDenied,
        NameError::NotFound => Error::InvalidHandle,
        NameError::NotOwner => Error::PermissionDenied,
        NameError::Full => Error::NoSpace,
    })
}

fn main(_: u64) -> i64 {
    let Ok(buffer) = service::ipc_buffer(0) else {
        return 1;
    };
    let endpoint = slot(slots::NAMES_SERVE);
    let mut registry: Registry<Handle, u64> = Registry::new(REGISTRY_MAX, PER_OWNER_MAX);
    let mut answer = (MessageInfo::default(), [0u64; 4]);
    loop {
        let received = match ipc::reply_recv(endpoint, answer.0, answer.1) {
            Ok(received) => received,
            // Only `recv`'s own errors come back (a dead caller is skipped): the endpoint
            // capability is wrong, which does not get better.
            Err(error) => return 100 + i64::from(error.code()),
        };
        let mut text = [0u8; 32];
        let name = service::words_name(&received.words, &mut text)
            .and_then(|length| core::str::from_utf8(&text[..length]).ok());
        answer = (MessageInfo::default(), [0; 4]);
        match received.info.label() {
            label::NAMES_REGISTER => {
                let status = if received.info.caps() != 1 {
                    code(Error::InvalidArgument)
                } else {
                    let endpoint = buffer.cap(0);
                    match name.map(|name| registry.register(name, endpoint, received.badge)) {
                        Some(Ok(())) => 0,
                        Some(Err(error)) => {
                            let _ = ipc::cap_delete(endpoint);
                            name_error(error)
                        }
                        None => {
                            let _ = ipc::cap_delete(endpoint);
                            code(Error::InvalidArgument)
                        }
                    }
                };
                answer.1[0] = status;
            }
            label::NAMES_LOOKUP => match name.map(|name| registry.lookup(name)) {
                Some(Ok(endpoint)) => {
                    buffer.set_cap(0, endpoint);
                    answer.0 = MessageInfo::new(0, 0, 1).unwrap_or_default();
                }
                Some(Err(error)) => answer.1[0] = name_error(error),
                None => answer.1[0] = code(Error::InvalidArgument),
            },
            label::NAMES_OWNER_DIED if received.badge == 0 => {
                for (_, endpoint) in registry.owner_died(received.words[0]) {
                    let _ = ipc::cap_delete(endpoint);
                }
            }
            _ => answer.1[0] = code(Error::InvalidArgument),
        }
    }
}

rt::entry!(main);
