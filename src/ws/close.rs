//! Close codes ringway sends (RFC 6455 §7.4 and ringway's own 4xxx range).

/// Protocol error.
pub const PROTOCOL: u16 = 1002;
/// Invalid payload data (bad UTF-8).
pub const INVALID_DATA: u16 = 1007;
/// Policy violation (a message that took too long to arrive).
pub const POLICY: u16 = 1008;
/// Message too big.
pub const TOO_BIG: u16 = 1009;
/// Service restart (drain): reconnect, possibly elsewhere.
pub const RESTART: u16 = 1012;
/// Try again later (overload).
pub const TRY_AGAIN: u16 = 1013;
/// Going away: idle timeout.
pub const GOING_AWAY: u16 = 1001;
/// Slow consumer: the client fell too far behind; resume from its cursor.
pub const SLOW_CONSUMER: u16 = 4008;
/// Rate limit exceeded.
pub const RATE_LIMITED: u16 = 4029;
/// The token expired and was not refreshed in time.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Repeated requests outside the token's permissions.
pub const FORBIDDEN: u16 = 4003;
/// The user is at `auth.max_connections_per_user` across the cluster.
pub const USER_LIMIT: u16 = 4009;
/// Closed by the app (`POST /v1/disconnect`).
pub const KICKED: u16 = 4010;
