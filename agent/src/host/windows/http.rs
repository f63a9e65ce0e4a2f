//! HTTP.SYS SSL certificate bindings (`netsh http ... sslcert ipport=...` through httpapi).

use ssis_crds::CertStore;
use windows::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, NO_ERROR, WIN32_ERROR};
use windows::Win32::Networking::HttpServer::{
    HTTP_INITIALIZE_CONFIG, HTTP_SERVICE_CONFIG_SSL_KEY, HTTP_SERVICE_CONFIG_SSL_PARAM, HTTP_SERVICE_CONFIG_SSL_QUERY,
    HTTP_SERVICE_CONFIG_SSL_SET, HTTPAPI_VERSION, HttpDeleteServiceConfiguration, HttpInitialize,
    HttpQueryServiceConfiguration, HttpServiceConfigQueryExact, HttpServiceConfigSSLCertInfo,
    HttpSetServiceConfiguration, HttpTerminate,
};
use windows::Win32::Networking::WinSock::{AF_INET, IN_ADDR, IN_ADDR_0, SOCKADDR, SOCKADDR_IN};
use windows::core::{GUID, PWSTR};

use super::util::{hex_upper, map_code, parse_thumbprint, pwstr_to_string, wide};
use crate::host::{HostError, SslBindingInfo};

/// `a.b.c.d:port` (the only form the HostConfig allows) as address octets and port.
pub fn parse_ip_port(ip_port: &str) -> Result<([u8; 4], u16), HostError> {
    let invalid = || HostError::Invalid(format!("ipPort {ip_port:?} is not a.b.c.d:port"));
    let (ip, port) = ip_port.rsplit_once(':').ok_or_else(invalid)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| invalid())?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    Ok((ip.octets(), port))
}

/// A GUID in registry form, with or without braces (what validation accepts:
/// [`crate::safety::parse_guid`]).
pub fn parse_guid(s: &str) -> Result<GUID, HostError> {
    crate::safety::parse_guid(s.trim())
        .map(|g| GUID::from_u128(g.as_u128()))
        .ok_or_else(|| HostError::Invalid(format!("appId {s:?} is not a GUID")))
}

/// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, as netsh prints an appid.
pub fn format_guid(g: &GUID) -> String {
    uuid::Uuid::from_u128(g.to_u128()).braced().to_string()
}

fn store_from_name(name: &str) -> CertStore {
    if name.eq_ignore_ascii_case("root") { CertStore::Root } else { CertStore::My }
}

fn store_to_name(store: CertStore) -> &'static str {
    // Spelled as netsh writes them.
    match store {
        CertStore::Root => "Root",
        CertStore::My => "MY",
    }
}

/// Size of the first query buffer in u64 words (1 KiB): larger than the fixed struct, so a
/// successful query always leaves a whole HTTP_SERVICE_CONFIG_SSL_SET at its start.
const QUERY_BUFFER_WORDS: usize = 128;
const _: () = assert!(QUERY_BUFFER_WORDS * 8 >= size_of::<HTTP_SERVICE_CONFIG_SSL_SET>());

/// HttpInitialize/HttpTerminate pair for the configuration API.
struct Session;

impl Session {
    fn new() -> Result<Self, HostError> {
        let v = HTTPAPI_VERSION { HttpApiMajorVersion: 1, HttpApiMinorVersion: 0 };
        // SAFETY: plain values and a null reserved pointer, as documented for the configuration
        // API; a success is paired with exactly one HttpTerminate by `Drop`.
        match WIN32_ERROR(unsafe { HttpInitialize(v, HTTP_INITIALIZE_CONFIG, None) }) {
            NO_ERROR => Ok(Session),
            code => Err(map_code("HttpInitialize", code.0)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: a `Session` exists only after HttpInitialize(HTTP_INITIALIZE_CONFIG) succeeded;
        // this is its one matching HttpTerminate.
        unsafe {
            HttpTerminate(HTTP_INITIALIZE_CONFIG, None);
        }
    }
}

fn sockaddr(ip_port: &str) -> Result<SOCKADDR_IN, HostError> {
    let (octets, port) = parse_ip_port(ip_port)?;
    Ok(SOCKADDR_IN {
        sin_family: AF_INET,
        sin_port: port.to_be(),
        sin_addr: IN_ADDR { S_un: IN_ADDR_0 { S_addr: u32::from_ne_bytes(octets) } },
        sin_zero: [0; 8],
    })
}

pub fn query(ip_port: &str) -> Result<Option<SslBindingInfo>, HostError> {
    let _session = Session::new()?;
    let mut addr = sockaddr(ip_port)?;
    let input = HTTP_SERVICE_CONFIG_SSL_QUERY {
        QueryDesc: HttpServiceConfigQueryExact,
        KeyDesc: HTTP_SERVICE_CONFIG_SSL_KEY { pIpPort: (&mut addr as *mut SOCKADDR_IN).cast::<SOCKADDR>() },
        dwToken: 0,
    };
    let context = format!("query SSL binding {ip_port}");
    // u64 elements keep the output aligned for HTTP_SERVICE_CONFIG_SSL_SET.
    let mut buf = vec![0u64; QUERY_BUFFER_WORDS];
    loop {
        let mut needed = 0u32;
        // SAFETY: `input` and the `addr` it points to live until after the call; the input size
        // is that of `input`'s type; the output pointer and size describe `buf` exactly (bytes),
        // so the API writes within it or reports ERROR_INSUFFICIENT_BUFFER; `needed` is a valid
        // out slot; no OVERLAPPED, so the call completes before returning.
        let rc = unsafe {
            HttpQueryServiceConfiguration(
                None,
                HttpServiceConfigSSLCertInfo,
                Some((&input as *const HTTP_SERVICE_CONFIG_SSL_QUERY).cast()),
                size_of::<HTTP_SERVICE_CONFIG_SSL_QUERY>() as u32,
                Some(buf.as_mut_ptr().cast()),
                (buf.len() * 8) as u32,
                Some(&mut needed),
                None,
            )
        };
        match WIN32_ERROR(rc) {
            NO_ERROR => break,
            ERROR_FILE_NOT_FOUND => return Ok(None),
            ERROR_INSUFFICIENT_BUFFER if needed as usize > buf.len() * 8 => {
                buf.resize((needed as usize).div_ceil(8), 0)
            }
            code => return Err(map_code(&context, code.0)),
        }
    }
    // SAFETY: on success the buffer starts with an HTTP_SERVICE_CONFIG_SSL_SET written by the
    // API; `buf` is 8-byte aligned and never smaller than the struct (QUERY_BUFFER_WORDS), and
    // `set` borrows `buf`, which is not touched again while `set` and the pointers inside live.
    let set = unsafe { &*buf.as_ptr().cast::<HTTP_SERVICE_CONFIG_SSL_SET>() };
    let p = &set.ParamDesc;
    let hash: &[u8] = if p.pSslHash.is_null() {
        &[]
    } else {
        // SAFETY: a non-null pSslHash points to SslHashLength bytes the API placed inside `buf`
        // (after the struct), alive as long as `set`.
        unsafe { std::slice::from_raw_parts(p.pSslHash.cast::<u8>(), p.SslHashLength as usize) }
    };
    // SAFETY: pSslCertStoreName is null or a NUL-terminated string the API placed inside `buf`.
    let store_name = unsafe { pwstr_to_string(p.pSslCertStoreName) };
    Ok(Some(SslBindingInfo {
        thumbprint: hex_upper(hash),
        store: store_from_name(&store_name),
        app_id: format_guid(&p.AppId),
    }))
}

fn set_raw(addr: &mut SOCKADDR_IN, hash: &mut [u8; 20], store: CertStore, app_id: GUID) -> u32 {
    let mut store_name = wide(store_to_name(store));
    let config = HTTP_SERVICE_CONFIG_SSL_SET {
        KeyDesc: HTTP_SERVICE_CONFIG_SSL_KEY { pIpPort: (addr as *mut SOCKADDR_IN).cast::<SOCKADDR>() },
        ParamDesc: HTTP_SERVICE_CONFIG_SSL_PARAM {
            SslHashLength: hash.len() as u32,
            pSslHash: hash.as_mut_ptr().cast(),
            AppId: app_id,
            pSslCertStoreName: PWSTR(store_name.as_mut_ptr()),
            ..Default::default()
        },
    };
    // SAFETY: `config` and everything it points to (`addr`, `hash`, `store_name`) are borrowed or
    // owned locals alive until the call returns; the size passed is that of `config`'s type; the
    // API copies the data and keeps no pointer; no OVERLAPPED, so it completes synchronously.
    unsafe {
        HttpSetServiceConfiguration(
            None,
            HttpServiceConfigSSLCertInfo,
            (&config as *const HTTP_SERVICE_CONFIG_SSL_SET).cast(),
            size_of::<HTTP_SERVICE_CONFIG_SSL_SET>() as u32,
            None,
        )
    }
}

fn delete_raw(addr: &mut SOCKADDR_IN) -> u32 {
    let config = HTTP_SERVICE_CONFIG_SSL_SET {
        KeyDesc: HTTP_SERVICE_CONFIG_SSL_KEY { pIpPort: (addr as *mut SOCKADDR_IN).cast::<SOCKADDR>() },
        ParamDesc: HTTP_SERVICE_CONFIG_SSL_PARAM::default(),
    };
    // SAFETY: `config` and the `addr` it points to live until the call returns; the size passed
    // is that of `config`'s type; no OVERLAPPED, so it completes synchronously.
    unsafe {
        HttpDeleteServiceConfiguration(
            None,
            HttpServiceConfigSSLCertInfo,
            (&config as *const HTTP_SERVICE_CONFIG_SSL_SET).cast(),
            size_of::<HTTP_SERVICE_CONFIG_SSL_SET>() as u32,
            None,
        )
    }
}

/// Bind `thumbprint` to `ip_port`, replacing any existing binding. An empty `app_id` keeps the
/// existing binding's appid (Microsoft: reuse the original appid when changing certificates).
pub fn set(ip_port: &str, thumbprint: &str, store: CertStore, app_id: &str) -> Result<(), HostError> {
    let mut hash = parse_thumbprint(thumbprint)?;
    let existing = query(ip_port)?;
    let app = if app_id.trim().is_empty() {
        match &existing {
            Some(e) => parse_guid(&e.app_id)?,
            None => {
                return Err(HostError::Invalid(format!("SSL binding {ip_port}: an appId is needed for a new binding")));
            }
        }
    } else {
        parse_guid(app_id)?
    };
    let _session = Session::new()?;
    let mut addr = sockaddr(ip_port)?;
    // HTTP.SYS has no update: delete, then add; restore the old binding if the add fails.
    if existing.is_some() {
        match WIN32_ERROR(delete_raw(&mut addr)) {
            NO_ERROR | ERROR_FILE_NOT_FOUND => {}
            code => return Err(map_code(&format!("delete SSL binding {ip_port}"), code.0)),
        }
    }
    match WIN32_ERROR(set_raw(&mut addr, &mut hash, store, app)) {
        NO_ERROR => Ok(()),
        code => {
            if let Some(old) = existing
                && let (Ok(mut old_hash), Ok(old_app)) = (parse_thumbprint(&old.thumbprint), parse_guid(&old.app_id))
            {
                let _ = set_raw(&mut addr, &mut old_hash, old.store, old_app);
            }
            Err(map_code(&format!("add SSL binding {ip_port}"), code.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_port_parses_ipv4_only() {
        assert_eq!(parse_ip_port("0.0.0.0:8391").unwrap(), ([0, 0, 0, 0], 8391));
        assert_eq!(parse_ip_port("10.1.2.3:443").unwrap(), ([10, 1, 2, 3], 443));
        for bad in ["0.0.0.0", "0.0.0.0:99999", "host:8391", "[::]:8391", ":8391"] {
            assert!(matches!(parse_ip_port(bad), Err(HostError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn guid_round_trips_in_netsh_form() {
        let s = "{00112233-4455-6677-8899-AABBCCDDEEFF}";
        let g = parse_guid(s).unwrap();
        assert_eq!(g, GUID::from_u128(0x00112233_4455_6677_8899_aabbccddeeff));
        assert_eq!(format_guid(&g).to_uppercase(), s);
        assert_eq!(parse_guid("00112233-4455-6677-8899-aabbccddeeff").unwrap(), g);
        for bad in [
            "",
            "{0011}",
            "00112233-4455-6677-8899-AABBCCDDEEFZ",
            "00112233445566778899AABBCCDDEEFF",
            "{00112233-4455-6677-8899-AABBCCDDEEFF",
            "urn:uuid:00112233-4455-6677-8899-aabbccddeeff",
        ] {
            assert!(matches!(parse_guid(bad), Err(HostError::Invalid(_))), "{bad}");
        }
        // The agent's default appid, field by field as HTTP_SERVICE_CONFIG_SSL_PARAM carries it.
        let g = parse_guid("{5E1A6D4B-0C0F-4D62-9B37-55515CA1E391}").unwrap();
        assert_eq!((g.data1, g.data2, g.data3), (0x5E1A_6D4B, 0x0C0F, 0x4D62));
        assert_eq!(g.data4, [0x9B, 0x37, 0x55, 0x51, 0x5C, 0xA1, 0xE3, 0x91]);
        assert_eq!(format_guid(&g), "{5e1a6d4b-0c0f-4d62-9b37-55515ca1e391}");
    }

    #[test]
    fn store_names_match_netsh() {
        assert_eq!(store_from_name("Root"), CertStore::Root);
        assert_eq!(store_from_name("MY"), CertStore::My);
        assert_eq!(store_from_name(""), CertStore::My);
        assert_eq!(store_to_name(CertStore::Root), "Root");
    }
}
