from playbooks.actions import revoke_token, webhook

ACTIONS = {a.name: a for a in (revoke_token.RevokeToken(), webhook.Webhook())}
