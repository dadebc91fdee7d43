-- Platform administration (issue 14): a deactivated account's browser sessions end with a reason
-- of their own and its bearer tokens stay refused after a re-activation, and platform templates made by an admin snapshot get a host-side name apart from
-- their display name, so one can replace another of the same name without a window in which
-- neither exists.

ALTER TABLE user_sessions DROP CONSTRAINT IF EXISTS user_sessions_revoked_why_check;
ALTER TABLE user_sessions ADD CONSTRAINT user_sessions_revoked_why_check
  CHECK (revoked_why IN ('logout', 'reuse', 'password', 'disabled'));

-- The name the host agents store the template under; NULL: the rule in agentTemplateName()
-- (a platform template's own name, a team template's id), which existing templates keep.
ALTER TABLE templates ADD COLUMN agent_name text;

-- User tokens issued before this time are refused: a deactivation sets it, so a token minted
-- before it does not come back to life when the account is activated again.
ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;
