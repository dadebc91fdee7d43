-- The control plane's certificate authority (mutual TLS with host agents). One row, made by
-- the first control plane that starts; replicas read it. The private key is sealed with
-- AES-256-GCM under a key the database never sees (NESTBOX_CA_KEY or <data-dir>/ca-key).
CREATE TABLE certificate_authority (
  id smallint PRIMARY KEY CHECK (id = 1),
  certificate_pem text NOT NULL,
  -- base64 of iv (12 bytes) | tag (16 bytes) | ciphertext of the PKCS#8 DER key
  private_key_sealed text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
