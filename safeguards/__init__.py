"""What every process of ours does at its edges to the network and the OS: bounded request heads and bodies,
logs without secrets or message texts, and state files no other user can read.

Depends on nothing of ours, so crm_server, the functions, supabase_local and tgcrm all use the same rules.
"""
