-- Dashboard sessions: a browser signs in once and holds a refresh token in an HttpOnly cookie;
-- each refresh rotates it. A session is one rotation family: presenting a token that was
-- already rotated (a stolen copy, or the victim after the thief) revokes the whole family.
-- Access tokens issued from a session carry its id (`sid`) and stop working with it.

CREATE TABLE user_sessions (
  id           text PRIMARY KEY,
  user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  -- The team the session's access tokens are for; switch-team moves it.
  team_id      text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  -- Absolute end: a stolen cookie does not live forever however often it is rotated.
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz,
  -- 'logout', 'reuse' (a rotated token came back), 'password' (the password changed).
  revoked_why  text CHECK (revoked_why IN ('logout', 'reuse', 'password'))
);
CREATE INDEX user_sessions_user ON user_sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
  -- sha256 of the token; the token itself is only ever in the cookie.
  token_hash text PRIMARY KEY,
  session_id text NOT NULL REFERENCES user_sessions (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- Set when this token was exchanged for the next one; a second use is reuse.
  rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
