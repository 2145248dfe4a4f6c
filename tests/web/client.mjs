// Signup, Login and GetMe over gRPC-Web with Connect's transport: what a
// browser application does. Usage: AUTHD_URL=http://127.0.0.1:50051 node client.mjs EMAIL
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "./gen/auth/v1/auth_pb.js";

const email = process.argv[2];
const password = "correct horse battery";
const transport = createGrpcWebTransport({ baseUrl: process.env.AUTHD_URL });
const client = createClient(AuthService, transport);

const { user } = await client.signup({ email, password, username: "web" });
const login = await client.login({ email, password });
const me = await client.getMe(
  {},
  { headers: { authorization: `Bearer ${login.accessToken}` } },
);
if (me.user.id !== user.id) {
  throw new Error(`GetMe returned ${me.user.id}, expected ${user.id}`);
}
try {
  await client.getMe({});
  throw new Error("GetMe without a token succeeded");
} catch (error) {
  if (error.code === undefined) throw error;
  console.log(`without a token: ${error.code}`);
}
console.log(`signed up, logged in and got ${me.user.email} as ${me.user.id}`);
