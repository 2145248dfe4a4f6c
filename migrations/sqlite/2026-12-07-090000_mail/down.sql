DROP TABLE mail_tokens;
DROP TABLE outbox;
