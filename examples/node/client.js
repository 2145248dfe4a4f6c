// Calls authd from Node.js: Signup, Login and GetMe over gRPC, then verifies
// the access token offline against authd's JWKS with jose.
//
// Settings: AUTHD_ADDR (default 127.0.0.1:50051), AUTHD_ISSUER and
// AUTHD_AUDIENCE (default authd). Exits non-zero on any failure.

import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { createRemoteJWKSet, jwtVerify } from "jose";

const addr = process.env.AUTHD_ADDR ?? "127.0.0.1:50051";
const issuer = process.env.AUTHD_ISSUER ?? "authd";
const audience = process.env.AUTHD_AUDIENCE ?? "authd";

// Loaded at run time from the repository's contract: nothing is generated.
const definition = protoLoader.loadSync("auth/v1/auth.proto", {
  includeDirs: [fileURLToPath(new URL("../../proto", import.meta.url))],
  longs: String,
  defaults: true,
});
const { AuthService } = grpc.loadPackageDefinition(definition).auth.v1;
const auth = new AuthService(addr, grpc.credentials.createInsecure());

// grpc-js unary calls take a callback; promises keep the flow linear.
const call = (method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) =>
    auth[method](request, metadata, (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );

const email = `node-${randomUUID().replaceAll("-", "").slice(0, 12)}@example.com`;
const password = "correct horse battery";

try {
  const { user } = await call("Signup", { email, password, username: "Node" });
  console.log(`Signup: created ${user.email} with id ${user.id}`);

  const login = await call("Login", { email, password });
  console.log(`Login: ${login.tokenType} token, expires in ${login.expiresIn} s`);

  const bearer = new grpc.Metadata();
  bearer.set("authorization", `Bearer ${login.accessToken}`);
  const { user: me } = await call("GetMe", {}, bearer);
  console.log(`GetMe: ${me.email} (${me.username}), id ${me.id}`);

  const jwksUrl = new URL(`http://${addr}/.well-known/jwks.json`);
  const { payload, protectedHeader } = await jwtVerify(
    login.accessToken,
    createRemoteJWKSet(jwksUrl),
    { algorithms: ["EdDSA"], typ: "at+jwt", issuer, audience, requiredClaims: ["sub"] },
  );
  console.log(
    `JWKS: ${jwksUrl} verifies the token (kid ${protectedHeader.kid}), sub ${payload.sub}`,
  );

  if (me.email !== email || payload.sub !== me.id) {
    throw new Error(`mismatch: signed up ${email}, GetMe ${me.email} ${me.id}, sub ${payload.sub}`);
  }
  console.log(`OK: the token's sub is the id GetMe returned for ${email}`);
} catch (error) {
  console.error(`failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  auth.close();
}
