//! A service's custom domains: claim, prove, list, release; operators
//! approve.

use crate::args::DomainCommand;
use crate::credentials;
use crate::output::print_claim;

pub async fn domain(command: DomainCommand) -> anyhow::Result<()> {
    match command {
        DomainCommand::Add { service, domain } => {
            let claim = credentials::logged_in()?
                .add_domain(&service, &domain)
                .await?;
            print_claim(&claim);
            println!(
                "publish the TXT record, then run `edgectl domain verify {service} {}`",
                claim.domain
            );
        }
        DomainCommand::Verify { service, domain } => {
            let claim = credentials::logged_in()?
                .verify_domain(&service, &domain)
                .await?;
            print_claim(&claim);
        }
        DomainCommand::List { service } => {
            credentials::logged_in()?
                .domains(&service)
                .await?
                .iter()
                .for_each(print_claim);
        }
        DomainCommand::Remove { service, domain } => {
            credentials::logged_in()?
                .remove_domain(&service, &domain)
                .await?;
            println!("{domain} released");
        }
        DomainCommand::Approve {
            domain,
            admin_token,
        } => {
            let done = credentials::operator(&admin_token)?
                .approve_domain(&domain)
                .await?;
            println!("{} approved", done.domain);
        }
    }
    Ok(())
}
